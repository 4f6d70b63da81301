"""The CLI client against a real `failoverd run` and the simulator."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from failoverd.cli import main as cli_main
from tests.fixtures.daemon import BLOCK, PRIMARY, SIM_ENV, STANDBY, Daemon, World, in_thread

pytestmark = pytest.mark.slow


async def test_manual_move_pause_resume_status_history(
    world: World,
    start_daemon: Callable[..., Daemon],
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = start_daemon(world.policy, env=SIM_ENV)
    await in_thread(d.wait_ready, world.url)
    await in_thread(d.wait_log, lambda r: r.get("event") == "standby eligible")
    # A manual move needs a target known to be up (never a move to an unknown server).
    await in_thread(
        d.wait_log, lambda r: r.get("event") == "server up" and r.get("server") == STANDBY
    )
    capsys.readouterr()

    # Paused: the move is still allowed by hand (pause only stops automatic moves).
    assert (
        await in_thread(
            cli_main,
            ["pause", "web", "--for", "1h", "--reason", "maintenance", "-c", str(world.policy)],
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("group web paused until ")
    assert out.rstrip().endswith("(maintenance)")

    assert await in_thread(cli_main, ["status", "-c", str(world.policy)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("web "))
    assert row.split()[:3] == ["web", "paused", PRIMARY]
    assert "yes, 59m" in row or "yes, 1h" in row

    assert await in_thread(cli_main, ["resume", "web", "-c", str(world.policy)]) == 0
    assert capsys.readouterr().out == "group web resumed\n"

    rc = await in_thread(cli_main, ["move", "web", "--to", STANDBY, "-c", str(world.policy)])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith("move ")
    assert lines[0].endswith(f"accepted: web → {STANDBY} ({BLOCK})")
    assert any("submitted (task " in line for line in lines)
    assert any("verified (task " in line and f"routedTo {STANDBY}" in line for line in lines)
    assert lines[-1].endswith(": success")
    assert world.sim.state.routing(BLOCK) == STANDBY

    # Right after a move the group is in cooldown: a second move is refused with the reason.
    rc = await in_thread(cli_main, ["move", "web", "--to", PRIMARY, "-c", str(world.policy)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("failoverd: move of web refused: ")
    assert "cooldown" in err

    assert await in_thread(cli_main, ["history", "web", "-c", str(world.policy)]) == 0
    out = capsys.readouterr().out
    assert "pause" in out
    assert "resume" in out
    assert f"1 of 1 blocks moved to {STANDBY}" in out
    assert await in_thread(d.stop) == 0
