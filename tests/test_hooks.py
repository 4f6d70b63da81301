"""Hooks as real subprocesses: veto reasons, timeouts, environment, fire-and-forget posts."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from failoverd.hooks import Hooks

ENV = {
    "FAILOVERD_GROUP": "web",
    "FAILOVERD_TARGET": "ns2",
    "FAILOVERD_FROM": "ns1",
    "FAILOVERD_BLOCKS": "203.0.113.8/29 198.51.100.7/32",
    "FAILOVERD_TRIGGER": "auto",
    "FAILOVERD_RESULT": "success",
    "FAILOVERD_MOVE_ID": "m1",
}


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)  # polling a condition with a deadline, not waiting blindly


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_pre_hook_exit_zero_lets_the_move_go() -> None:
    assert await Hooks().pre(py("pass"), ENV) is None


async def test_pre_hook_veto_reason_is_the_first_line_of_stderr() -> None:
    code = (
        "import sys; sys.stderr.write('\\n  change freeze until 18:00  \\nsecond\\n'); sys.exit(3)"
    )
    assert await Hooks().pre(py(code), ENV) == "change freeze until 18:00"


async def test_pre_hook_silent_failure_names_the_exit_code() -> None:
    assert await Hooks().pre(py("import sys; sys.exit(4)"), ENV) == (
        f"pre hook {sys.executable} exited 4"
    )


async def test_pre_hook_that_cannot_start_vetoes() -> None:
    reason = await Hooks().pre(["/nonexistent/ok-to-failover"], ENV)
    assert reason == "pre hook /nonexistent/ok-to-failover could not run: No such file or directory"


async def test_pre_hook_timeout_vetoes_and_kills_its_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    code = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n"
    )
    hooks = Hooks(pre_timeout=1.0)
    reason = await hooks.pre(py(code), ENV)
    assert reason == f"pre hook {sys.executable} timed out after 1s"
    hook_pid, child_pid = map(int, pids.read_text().split())
    assert pid_gone(hook_pid)  # reaped by us
    # The grandchild was killed with the group; init reaps it.
    await wait_for(lambda: pid_gone(child_pid))


def leaves_a_child(pids: Path, exit_code: int, stderr: str = "") -> list[str]:
    """A hook that starts a background child (inheriting its stderr) and exits at once."""
    return py(
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(str(child.pid))\n"
        f"sys.stderr.write({stderr!r}); sys.stderr.flush()\n"
        f"sys.exit({exit_code})\n"
    )


@pytest.mark.parametrize(
    ("exit_code", "stderr", "expected"), [(0, "", None), (3, "change freeze\n", "change freeze")]
)
async def test_pre_hook_answers_when_it_exits_even_if_a_child_holds_its_stderr(
    tmp_path: Path, exit_code: int, stderr: str, expected: str | None
) -> None:
    # Process.wait() waits for the pipes too: a hook that left a notification running in
    # the background used to "time out", and a timeout vetoes the failover.
    pids = tmp_path / "pids"
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        assert await Hooks(pre_timeout=20.0).pre(leaves_a_child(pids, exit_code, stderr), ENV) == (
            expected
        )
        assert loop.time() - began < 10.0  # its answer, not the timeout's
    finally:
        os.kill(int(pids.read_text()), signal.SIGKILL)


async def test_hooks_get_the_move_details_but_never_the_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVH_APPLICATION_SECRET", "s3cr3t-app")
    monkeypatch.setenv("OVH_CONSUMER_KEY", "s3cr3t-ck")
    monkeypatch.setenv("FAILOVERD_TOKEN", "s3cr3t-token")
    out = tmp_path / "env"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    assert await Hooks().pre(py(code), ENV) is None
    seen = out.read_text()
    for key, value in ENV.items():
        assert f'"{key}": "{value}"' in seen
    assert "s3cr3t" not in seen


async def test_post_hook_returns_at_once_and_runs_in_the_background(tmp_path: Path) -> None:
    out = tmp_path / "done"
    code = f"import os; open({str(out)!r}, 'w').write(os.environ['FAILOVERD_RESULT'])"
    hooks = Hooks()
    loop = asyncio.get_running_loop()
    started = loop.time()
    hooks.post(py(code), ENV)
    assert loop.time() - started < 0.05  # never blocks a move
    await wait_for(lambda: hooks.running == 0)
    assert out.read_text() == "success"


async def test_post_hook_is_killed_at_its_timeout_and_reaped(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    hooks = Hooks(post_timeout=0.5)
    hooks.post(py(code), ENV)
    await wait_for(lambda: hooks.running == 0)
    assert pid_gone(int(pid_file.read_text()))


async def test_close_kills_post_hooks_still_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    hooks = Hooks()
    hooks.post(py(code), ENV)
    await wait_for(pid_file.exists)
    await wait_for(lambda: pid_file.read_text() != "")
    await hooks.close()
    assert hooks.running == 0
    assert pid_gone(int(pid_file.read_text()))


async def test_a_post_hook_that_cannot_start_is_only_logged() -> None:
    hooks = Hooks()
    hooks.post(["/nonexistent/notify"], ENV)
    await wait_for(lambda: hooks.running == 0)
