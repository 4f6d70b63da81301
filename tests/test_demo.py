"""`failoverd demo`, end to end: the real daemon, the simulator, loopback servers."""

from __future__ import annotations

import fnmatch
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from failoverd.metrics import Metrics
from failoverd.sim import demo
from failoverd.sim.inventory import Fault

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = ("203.0.113.8/29", "198.51.100.7/32")
pytestmark = pytest.mark.slow


def failoverd(*args: str) -> list[str]:
    return [sys.executable, "-m", "failoverd", *args]


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("OVH_", "FAILOVERD_"))}
    out["PYTHONPATH"] = str(ROOT)
    return out


def chapters(output: str) -> dict[str, str]:
    """The demo's output split on its `== title` lines, keyed by the title's first word."""
    parts = re.split(r"^== (\S+).*$", output, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


# ----------------------------------------------------------------------------- the demo


def test_demo_moves_the_blocks_to_the_eligible_standby() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        failoverd("demo"), capture_output=True, text=True, timeout=100, env=env(), check=False
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    parts = chapters(proc.stdout)
    assert set(parts) == {"starting:", "stopping", "result"}, list(parts)
    failover = parts["stopping"]

    # The down verdict, then both blocks read back on the eligible standby.
    assert re.search(r"server down.*ns1001\.ip-51-68-100\.eu", failover), failover
    for block in BLOCKS:
        assert f"routing  {block} -> {demo.STANDBY}" in failover, failover
    assert f"-> {demo.FAR_STANDBY}" not in proc.stdout

    # The incompatible standby, listed first, was skipped with its reason: in the preflight
    # and again in the decision (its region against the blocks').
    far = [line for line in failover.splitlines() if demo.FAR_STANDBY in line]
    assert any("ca-east-bhs" in line for line in far), failover
    assert "ca-east-bhs" in parts["starting:"]
    assert f"preflight: {demo.FAR_STANDBY} NOT eligible" in parts["starting:"]
    assert f"preflight: {demo.STANDBY} eligible" in parts["starting:"]

    # Task ids the simulator handed out appear in the timeline, as they happened.
    audit = re.findall(r"move (\S+): \S+ -> (\S+)  task (\d+)", parts["result"])
    assert sorted(block for block, _, _ in audit) == sorted(BLOCKS)
    assert {target for _, target, _ in audit} == {demo.STANDBY}
    for _, _, task_id in audit:
        assert task_id in failover

    # Per-phase timings and the final status table.
    timings = re.search(r"phase timings.*", parts["result"])
    assert timings is not None
    for phase in demo.PHASES:
        assert re.search(rf"\b{phase} \d+\.\d+s", timings.group(0)), timings.group(0)
    assert "failed_over" in parts["result"]
    assert (
        f"OK: every block of group web is routed to the eligible standby {demo.STANDBY}"
        in (parts["result"])
    )
    assert took < 60, f"the demo took {took:.1f}s"
    # The simulator's credentials reach the daemon through its environment, never the screen.
    for secret in ("demo-app-secret", "demo-consumer-key"):
        assert secret not in proc.stdout + proc.stderr


def test_demo_fails_clearly_when_no_move_can_succeed() -> None:
    """Every OVH task ends in ovhError: no standby left, exit 1 with the reason, no hang."""
    out, err = io.StringIO(), io.StringIO()
    sabotage = Fault(kind="task", task_status="ovhError", comment="demo: task sabotaged")
    started = time.monotonic()
    code = demo.run(keep_running=False, out=out, err=err, move_deadline=6.0, faults=[sabotage])
    assert code == 1, out.getvalue()[-3000:]
    message = err.getvalue()
    assert "demo failed: the failover did not complete within 6s" in message
    assert "the simulator routes" in message
    assert "Traceback" not in message
    # The failed attempt is in the timeline, with OVH's comment.
    assert "demo: task sabotaged" in out.getvalue()
    assert time.monotonic() - started < 45


# ----------------------------------------------------------------------------- --keep-running


class Lines:
    """A subprocess's stdout, line by line, waited on with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def until(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {pattern!r} in:\n{''.join(self.seen)[-3000:]}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"exited before {pattern!r}:\n{''.join(self.seen)[-3000:]}")
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found


@pytest.fixture
def keep_running() -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    proc = subprocess.Popen(
        failoverd("demo", "--keep-running"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
    )
    try:
        yield proc, Lines(proc)
    finally:
        if proc.poll() is None:
            # SIGINT first: the demo then stops its daemon, which runs in its own session
            # and would outlive a killed demo.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_keep_running_serves_the_cli_and_stops_on_ctrl_c(
    keep_running: tuple[subprocess.Popen[str], Lines],
) -> None:
    proc, out = keep_running
    url = out.until(r"status --url (http://127\.0\.0\.1:\d+)", timeout=90).group(1)
    policy = Path(out.until(r"move web .* -c (\S+failoverd\.yaml)", timeout=10).group(1))
    out.until(r"--force because", timeout=10)
    assert policy.exists()

    status = subprocess.run(
        failoverd("status", "--url", url, "--json"),
        capture_output=True,
        text=True,
        timeout=30,
        env=env(),
        check=False,
    )
    assert status.returncode == 0, status.stderr
    group = next(g for g in json.loads(status.stdout)["groups"] if g["name"] == "web")
    assert group["holder"] == demo.STANDBY

    # The manual move back that the demo suggests, exactly as printed.
    back = subprocess.run(
        failoverd("move", "web", "--to", demo.PRIMARY, "--force", "-c", str(policy)),
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
        check=False,
    )
    assert back.returncode == 0, back.stdout + back.stderr
    out.until(rf"routing  {re.escape(BLOCKS[0])} -> {re.escape(demo.PRIMARY)}", timeout=30)

    token = (policy.parent / "admin.token").read_text().strip()
    assert len(token) >= 16
    assert token not in "".join(out.seen) + back.stdout + back.stderr + status.stdout

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0, "".join(out.seen)[-3000:]
    assert not policy.parent.exists(), "the demo's temporary directory was left behind"


# ----------------------------------------------------------------------------- the pieces


def test_phase_timings_come_from_the_metrics() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.phase("task", 1.5)
    metrics.phase("total", 2.0)
    metrics.phase("total", 4.0)
    timings = demo.phase_timings(metrics.render().decode())
    assert timings == {"task": (1.5, 1.0), "total": (6.0, 2.0)}


def test_long_reasons_read_one_clause_per_line() -> None:
    assert demo.reason_lines("") == ()
    assert demo.reason_lines("web on primary ns1 (up)") == ("web on primary ns1 (up)",)
    long = "primary ns1001 down for 2 checks; moving 2 blocks to ns1002; skipped ns5000 " * 2
    assert demo.reason_lines(long)[0] == "primary ns1001 down for 2 checks"


def test_log_lines_render_with_their_fixed_keys() -> None:
    event = demo.log_event(
        7,
        {
            "timestamp": "2026-01-02T03:04:05.500000Z",
            "level": "warning",
            "logger": "failoverd.supervisor",
            "event": "move submitted",
            "group": "web",
            "block": "203.0.113.8/29",
            "task_id": 42,
            "took_s": 0.0123,
            "reason": "because",
        },
    )
    assert event.key == "log:7"
    assert event.at == pytest.approx(1767323045.5)
    assert event.text == (
        "log      WARNING move submitted group=web block=203.0.113.8/29 task_id=42 took 0.012s"
    )
    assert event.more == ("because",)


def test_demo_resources_ship_in_the_package() -> None:
    """An installed (non-editable) failoverd finds its demo files: package-data covers them."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["failoverd"]
    for name in ("demo_inventory.yaml", "demo_policy.yaml"):
        assert (ROOT / "failoverd" / "sim" / name).is_file()
        assert any(fnmatch.fnmatch(f"sim/{name}", g) for g in globs), (name, globs)
