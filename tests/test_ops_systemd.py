"""systemd/failoverd.service: systemd accepts it, and it agrees with the code it starts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from failoverd.cli import DEFAULT_CONFIG, build_parser
from failoverd.policy import DaemonPolicy

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "failoverd.service"
INSTALLED_BINARY = "/usr/bin/failoverd"
VENV_BINARY = Path(sys.executable).parent / "failoverd"


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; systemd allows repeated keys, configparser not."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def values(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in directives(UNIT.read_text()) if s == section and k == key]


def one(key: str, section: str = "Service") -> str:
    found = values(key, section)
    assert len(found) == 1, f"{key} appears {len(found)} times"
    return found[0]


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip(
            "systemd-analyze not found: install systemd (scripts/install-tools.sh does) "
            "to verify systemd/failoverd.service"
        )
    return tool


def runnable_copy(tmp_path: Path) -> Path:
    """The unit with the binary pointed at this venv: verify insists ExecStart exists."""
    assert VENV_BINARY.exists(), f"console script missing: {VENV_BINARY}"
    unit = tmp_path / "failoverd.service"
    unit.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(VENV_BINARY)))
    return unit


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    tool = systemd_analyze()
    unit = runnable_copy(tmp_path)
    proc = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # verify exits 0 on unknown keys but prints them: any output is a defect.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout + proc.stderr == ""


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a typo in a key is reported."""
    tool = systemd_analyze()
    unit = runnable_copy(tmp_path)
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    proc = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "WatchdogSecs" in proc.stdout + proc.stderr


def test_hardening_exposure_stays_low(tmp_path: Path) -> None:
    tool = systemd_analyze()
    unit = runnable_copy(tmp_path)
    proc = subprocess.run(
        [tool, "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("this systemd-analyze has no offline security mode (systemd < 250)")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "Overall exposure level" in proc.stdout


def test_service_contract() -> None:
    assert one("Type") == "notify"
    assert one("WatchdogSec") == "30s"
    assert one("Restart") == "on-failure"
    assert "78" in one("RestartPreventExitStatus").split()
    reload = values("ExecReload")
    assert reload[-1] == "/bin/kill -HUP $MAINPID"
    assert one("StateDirectory") == DaemonPolicy().state_dir.name
    assert Path("/var/lib", one("StateDirectory")) == DaemonPolicy().state_dir
    assert Path("/etc", one("ConfigurationDirectory")) == DEFAULT_CONFIG.parent
    assert one("User") == "failoverd"
    assert "DynamicUser" not in {k for _, k, _ in directives(UNIT.read_text())}
    assert one("AmbientCapabilities") == "CAP_NET_RAW"
    assert one("CapabilityBoundingSet") == "CAP_NET_RAW"
    assert one("ProtectSystem") == "strict"
    assert one("NoNewPrivileges") == "yes"
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    # Credentials reach the service as a systemd credential, never through the environment.
    assert one("LoadCredential") == "ovh.conf:/etc/failoverd/ovh.conf"
    assert not values("Environment")
    assert not values("EnvironmentFile")
    timeout = one("TimeoutStopSec")
    assert timeout.endswith("s")
    assert int(timeout[:-1]) >= 25


def test_every_exec_line_is_a_real_cli_invocation() -> None:
    """ExecStart/ExecStartPre/ExecReload parse with the real argument parser."""
    parser = build_parser()
    commands = values("ExecStartPre") + values("ExecStart") + values("ExecReload")
    ours = [shlex.split(c) for c in commands if c.startswith(INSTALLED_BINARY)]
    assert {argv[1] for argv in ours} == {"check-config", "run"}
    for argv in ours:
        args = parser.parse_args(argv[1:])
        assert args.config == DEFAULT_CONFIG
    assert shlex.split(one("ExecStart"))[1] == "run"
    assert shlex.split(one("ExecStartPre"))[1] == "check-config"
