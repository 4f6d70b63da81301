"""Crash safety (SPEC §5.8): SIGKILL the engine at each journal step of a move, restart it.

The engine runs in a separate process (tests/crash_harness.py) against the simulator and
health endpoints served by this test; the harness kills itself right after the chosen
step reached the journal. After a restart, the simulator's audit must show exactly one
move per block and the journal must tell the whole story.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from failoverd.journal import Journal
from failoverd.sim.inventory import inventory_from_dict
from failoverd.sim.server import start_simulator
from tests.engine_world import CRASH_GROUP, CRASH_SERVERS, inventory

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = CRASH_GROUP.blocks


async def run_harness(config: Path, http: dict[str, Any]) -> tuple[int, str]:
    """Run the harness; fail the primary once the harness says its standbys are up.

    Standbys must have their verdict before the primary falls, or the first choice
    would depend on which check finished first (an unknown standby is skipped).
    """
    http["ns1"].answer(200, "ok")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.crash_harness",
        str(config),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            if line.startswith("harness: standbys up"):
                http["ns1"].answer(503, "down")

    await asyncio.wait_for(asyncio.gather(read(), proc.wait()), 60)
    assert proc.returncode is not None
    return proc.returncode, "".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_after",
    [
        "planned",  # decided and written, nothing sent
        "submitting",  # before the POST
        "submitted",  # after the POST, task id journaled
        "task_done",  # the task is done, not yet verified in the journal
        "verified",  # a block verified, the move not finished
    ],
)
async def test_sigkill_at_each_journal_step_never_moves_a_block_twice(
    kill_after: str, tmp_path: Path, http_server_factory: Callable[..., Awaitable[Any]]
) -> None:
    # Tasks take long enough to still be running when the engine comes back.
    inv = inventory(
        CRASH_SERVERS, [CRASH_GROUP], task_durations={"init": 0.05, "todo": 0.05, "doing": 0.3}
    )
    sim = await start_simulator(inventory_from_dict(inv))
    try:
        http = {
            s.name: await http_factory_answer(http_server_factory, s.healthy) for s in CRASH_SERVERS
        }
        state_dir = tmp_path / "state"
        config = tmp_path / "harness.json"
        base = {
            "base_url": sim.base_url,
            "urls": {name: f"{srv.url}healthz" for name, srv in http.items()},
            "state_dir": str(state_dir),
            "target": "ns2",
        }

        config.write_text(json.dumps({**base, "kill_after": kill_after}))
        code, out = await run_harness(config, http)
        assert code == -signal.SIGKILL, out
        assert f"harness: SIGKILL after {kill_after}" in out

        config.write_text(json.dumps({**base, "kill_after": None}))
        code, out = await run_harness(config, http)
        assert code == 0, out

        # OVH saw exactly one move per block, and both blocks are on ns2.
        accepted = [
            e for e in sim.state.audit() if e["action"] == "move" and e["outcome"] == "accepted"
        ]
        assert sorted(e["block"] for e in accepted) == sorted(BLOCKS), accepted
        assert all(e["to"] == "ns2" for e in accepted)
        assert all(sim.state.routing(b) == "ns2" for b in BLOCKS)
        task_of = {e["block"]: e["task_id"] for e in accepted}

        journal = Journal.open(state_dir)
        try:
            moves = await journal.moves("web")
            assert await journal.unfinished_moves() == []
            final = moves[-1]
            assert final.result == "success"
            if kill_after == "planned":
                # Nothing was sent: that move is closed as abandoned, a new one decided.
                assert [m.result for m in moves] == ["abandoned", "success"]
            else:
                assert len(moves) == 1  # the same move, followed to its end
            story = await journal.all_steps(final.move_id)
            for block in BLOCKS:
                steps = [s for s in story if s.block == block]
                names = [s.step for s in steps]
                assert names[0] == "planned"
                assert names[-1] == "verified"
                assert "submitting" in names
                submitted = [s for s in steps if s.step == "submitted"]
                if submitted:
                    # One task id, and it is the one OVH created.
                    assert {s.task_id for s in submitted} == {task_of[block]}, steps
                    assert names.index("submitting") < names.index("submitted")
                    assert names.index("submitted") < names.index("verified")
                else:
                    # Killed between the POST and its answer; the task ended before the
                    # restart looked for it: the routing proved the move, nothing resent.
                    assert steps[-1].reason == "routedTo ns2 after a restart", steps
            history = await journal.history("web", 200)
            if kill_after != "planned":
                assert any(e.kind == "replay" for e in history)
            finished = [e for e in history if e.kind == "move" and "result" in e.details]
            assert finished[-1].details["result"] == "success"
            assert "2 of 2 blocks moved to ns2" in finished[-1].message
        finally:
            await journal.close()
    finally:
        await sim.close()


async def http_factory_answer(factory: Callable[..., Awaitable[Any]], healthy: bool) -> Any:
    server = await factory()
    if not healthy:
        server.answer(503, "down")
    return server
