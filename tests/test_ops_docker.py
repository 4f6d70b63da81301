"""Dockerfile: no Docker engine here, so the file is read against the code it packages."""

from __future__ import annotations

import http.server
import json
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from failoverd.cli import DEFAULT_CONFIG, build_parser
from failoverd.policy import DaemonPolicy

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def args_of(name: str) -> list[str]:
    return [rest for word, rest in instructions() if word == name]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_multi_stage_slim_runtime() -> None:
    froms = args_of("FROM")
    assert len(froms) >= 2
    assert froms[0].endswith("AS build")
    assert froms[-1] == "python:3.11-slim"
    copies = [rest for word, rest in final_stage() if word == "COPY"]
    assert any(c.startswith("--from=build ") for c in copies)
    # Nothing of the source tree reaches the runtime stage except through the wheel.
    assert all(c.startswith("--from=") for c in copies)


def test_runs_as_a_non_root_user() -> None:
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")


def test_entrypoint_is_the_console_script_and_cmd_parses() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = args_of("ENTRYPOINT")
    assert json.loads(entrypoint) == ["failoverd"]
    assert "failoverd" in scripts
    (cmd,) = args_of("CMD")
    argv = json.loads(cmd)
    args = build_parser().parse_args(argv)
    assert args.command == "run"
    assert args.config == DEFAULT_CONFIG


def test_port_and_volumes_match_the_defaults() -> None:
    daemon = DaemonPolicy()
    (expose,) = args_of("EXPOSE")
    assert expose == str(daemon.listen_port)
    (volume,) = args_of("VOLUME")
    assert set(json.loads(volume)) == {str(DEFAULT_CONFIG.parent), str(daemon.state_dir)}


def test_build_context_contains_what_the_build_stage_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :].count("*") == 1
    allowed = {line.lstrip("!").rstrip("/") for line in ignore if line.startswith("!")}
    sources: list[str] = []
    for word, rest in instructions():
        if word == "COPY" and not rest.startswith("--from"):
            sources += shlex.split(rest)[:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert src.rstrip("/") in allowed, f"{src} is excluded by .dockerignore"
    # pyproject's readme must be in the context or the wheel build fails.
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"] in allowed


def healthcheck_argv() -> list[str]:
    (healthcheck,) = args_of("HEALTHCHECK")
    assert "CMD " in healthcheck
    argv = json.loads(healthcheck.split("CMD ", 1)[1])
    assert isinstance(argv, list)
    return [str(a) for a in argv]


class _Healthz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def healthz_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_healthcheck_command_against_a_real_listener(
    healthz_server: http.server.HTTPServer, status: int, exit_code: int
) -> None:
    """The image's HEALTHCHECK, run as is but pointed at a listener on a free port."""
    argv = healthcheck_argv()
    assert argv[0] == "python"
    default_url = f"http://127.0.0.1:{DaemonPolicy().listen_port}/healthz"
    assert default_url in argv[-1]
    port = healthz_server.server_address[1]
    code = argv[-1].replace(default_url, f"http://127.0.0.1:{port}/healthz")
    _Healthz.status = status
    proc = subprocess.run(
        [sys.executable, *argv[1:-1], code], capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == exit_code, proc.stderr
