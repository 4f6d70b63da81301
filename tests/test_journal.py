"""The journal on a real SQLite file in tmp_path, and the state-directory lock."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from failoverd.errors import AlreadyRunning
from failoverd.journal import JOURNAL_FILE, SCHEMA_VERSION, Journal, JournalError, StateDirLock
from failoverd.model import JournaledMove, PersistedGroup, PersistedState


def _move(move_id: str = "m1", group: str = "web", created: float = 1000.0) -> JournaledMove:
    return JournaledMove(
        move_id=move_id,
        group=group,
        trigger="auto",
        target="ns2",
        blocks=("203.0.113.8/29", "198.51.100.7/32"),
        dry_run=False,
        created=created,
        reason="primary ns1 down for 3 checks; moving 2 blocks to ns2",
    )


async def test_move_steps_are_followed_to_the_latest_with_task_id_carried(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    await journal.create_move(_move())
    await journal.step("m1", "203.0.113.8/29", "ns2", "submitting", at=1001.0)
    await journal.step(
        "m1", "203.0.113.8/29", "ns2", "submitted", at=1002.0, task_id=42, via="dedicated"
    )
    await journal.step("m1", "203.0.113.8/29", "ns2", "task_done", at=1003.0)
    await journal.step("m1", "198.51.100.7/32", "ns2", "failed", at=1003.5, reason="ovhError")
    await journal.step("m1", "198.51.100.7/32", "ns3", "submitting", at=1004.0)

    (move,) = await journal.unfinished_moves()
    assert move.move_id == "m1"
    assert move.blocks == ("203.0.113.8/29", "198.51.100.7/32")
    steps = {(s.block, s.target): s for s in move.steps}
    assert set(steps) == {
        ("203.0.113.8/29", "ns2"),
        ("198.51.100.7/32", "ns2"),
        ("198.51.100.7/32", "ns3"),
    }
    done = steps[("203.0.113.8/29", "ns2")]
    assert (done.step, done.task_id, done.via, done.at) == ("task_done", 42, "dedicated", 1003.0)
    assert steps[("198.51.100.7/32", "ns2")].step == "failed"
    assert steps[("198.51.100.7/32", "ns2")].reason == "ovhError"
    assert steps[("198.51.100.7/32", "ns3")].step == "submitting"

    story = [(s.block, s.target, s.step) for s in await journal.all_steps("m1")]
    assert story[:3] == [
        ("203.0.113.8/29", "ns2", "planned"),
        ("198.51.100.7/32", "ns2", "planned"),
        ("203.0.113.8/29", "ns2", "submitting"),
    ]
    assert len(story) == 7

    await journal.finish_move("m1", "partial", at=1010.0, reason="web: 1 of 2 blocks moved")
    assert await journal.unfinished_moves() == []
    finished = await journal.get_move("m1")
    assert finished is not None
    assert (finished.result, finished.finished) == ("partial", 1010.0)
    await journal.close()


# The schema failoverd wrote before moves.force existed (user_version 1), as it was.
_SCHEMA_V1 = """
CREATE TABLE moves (
    id TEXT PRIMARY KEY, grp TEXT NOT NULL, trigger TEXT NOT NULL, target TEXT NOT NULL,
    blocks TEXT NOT NULL, dry_run INTEGER NOT NULL, reason TEXT NOT NULL, created REAL NOT NULL,
    result TEXT, finished REAL
);
CREATE INDEX moves_open ON moves (result) WHERE result IS NULL;
CREATE TABLE steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, move_id TEXT NOT NULL REFERENCES moves (id),
    block TEXT NOT NULL, target TEXT NOT NULL, step TEXT NOT NULL, task_id INTEGER, via TEXT,
    reason TEXT, at REAL NOT NULL
);
CREATE INDEX steps_move ON steps (move_id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, grp TEXT, kind TEXT NOT NULL,
    message TEXT NOT NULL, move_id TEXT, details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_grp ON events (grp, id);
CREATE TABLE engine_state (
    id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL, saved REAL NOT NULL
);
PRAGMA user_version = 1;
"""


async def test_a_forced_move_keeps_force_and_an_old_journal_is_upgraded(tmp_path: Path) -> None:
    # A journal left by the previous version, with a move still open in it.
    old = sqlite3.connect(tmp_path / JOURNAL_FILE)
    old.executescript(_SCHEMA_V1)
    old.execute(
        "INSERT INTO moves (id, grp, trigger, target, blocks, dry_run, reason, created)"
        " VALUES ('m0', 'web', 'auto', 'ns2', '[\"203.0.113.8/29\"]', 0, 'primary down', 1.0)"
    )
    old.commit()
    old.close()

    journal = Journal.open(tmp_path)
    (kept,) = await journal.unfinished_moves()
    assert (kept.move_id, kept.blocks, kept.force) == ("m0", ("203.0.113.8/29",), False)
    await journal.create_move(replace(_move("m1", created=2.0), trigger="manual", force=True))
    await journal.create_move(_move("m2", created=3.0))
    await journal.close()

    reopened = Journal.open(tmp_path)
    assert [(m.move_id, m.force) for m in await reopened.moves("web")] == [
        ("m0", False),
        ("m1", True),
        ("m2", False),
    ]
    forced = await reopened.get_move("m1")
    assert forced is not None
    assert (forced.trigger, forced.force) == ("manual", True)
    history = await reopened.history("web", 10)
    assert [e.details.get("force") for e in history if e.kind == "move"] == [True, False]
    await reopened.close()
    check = sqlite3.connect(tmp_path / JOURNAL_FILE)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    check.close()


async def test_history_is_per_group_newest_limited_and_oldest_first(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    await journal.record("pause", "web paused (maintenance)", at=1.0, group="web")
    await journal.record("reload", "policy reloaded", at=2.0)
    await journal.create_move(_move(created=3.0))
    await journal.step("m1", "203.0.113.8/29", "ns2", "submitted", at=4.0, task_id=7)
    await journal.record("pause", "db paused", at=5.0, group="db")

    web = await journal.history("web", 10)
    assert [(e.kind, e.message) for e in web] == [
        ("pause", "web paused (maintenance)"),
        ("move", "primary ns1 down for 3 checks; moving 2 blocks to ns2"),
        ("step", "203.0.113.8/29 → ns2: submitted (task 7)"),
    ]
    assert web[2].move_id == "m1"
    assert web[2].details == {
        "block": "203.0.113.8/29",
        "step": "submitted",
        "target": "ns2",
        "task_id": 7,
    }
    last_two = await journal.history(None, 2)
    assert [e.message for e in last_two] == [
        "203.0.113.8/29 → ns2: submitted (task 7)",
        "db paused",
    ]
    assert [e.id for e in last_two] == sorted(e.id for e in last_two)
    await journal.close()


async def test_engine_state_survives_reopening(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    assert await journal.load_state() is None
    state = PersistedState(
        groups={
            "web": PersistedGroup(cooldown_until=1600.0, last_move_at=1000.0),
            "db": PersistedGroup(paused=True, pause_until=2000.0, pause_reason="kernel update"),
        },
        failovers=(1000.0, 1200.0),
    )
    await journal.save_state(state, at=1.0)
    await journal.create_move(_move())
    await journal.close()

    reopened = Journal.open(tmp_path)
    assert await reopened.load_state() == state
    assert [m.move_id for m in await reopened.unfinished_moves()] == ["m1"]
    await reopened.close()


async def test_writes_are_durable_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    modes = await journal._run(
        lambda: (
            journal._db().execute("PRAGMA journal_mode").fetchone()[0],
            journal._db().execute("PRAGMA synchronous").fetchone()[0],
        )
    )
    assert modes == ("wal", 2)  # 2 = FULL
    await journal.close()


async def test_calls_run_off_the_event_loop_thread(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    thread = await journal._run(lambda: threading.current_thread().name)
    assert thread.startswith("journal")
    assert thread != threading.current_thread().name
    await journal.close()


async def test_step_of_an_unknown_move_and_use_after_close_are_clear_errors(
    tmp_path: Path,
) -> None:
    journal = Journal.open(tmp_path)
    with pytest.raises(JournalError, match="journal has no move nope"):
        await journal.step("nope", "203.0.113.8/29", "ns2", "submitting", at=1.0)
    await journal.close()
    with pytest.raises(JournalError, match="is closed"):
        await journal.history(None, 1)


def test_a_journal_that_cannot_be_created_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError, match="cannot create state directory"):
        Journal.open(blocker / "state")


def test_lock_refuses_a_second_holder_and_is_released(tmp_path: Path) -> None:
    first = StateDirLock(tmp_path / "state")
    first.acquire()
    with pytest.raises(AlreadyRunning) as err:
        StateDirLock(tmp_path / "state").acquire()
    assert str(err.value) == (
        f"another failoverd (pid {os.getpid()}) is running with state directory "
        f"{tmp_path / 'state'}"
    )
    first.release()
    with StateDirLock(tmp_path / "state"):
        pass


def test_lock_held_by_another_process_names_its_pid(tmp_path: Path) -> None:
    script = (
        "import sys, pathlib\n"
        "from failoverd.journal import StateDirLock\n"
        "lock = StateDirLock(pathlib.Path(sys.argv[1])); lock.acquire()\n"
        "print('locked', flush=True); sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(AlreadyRunning, match=rf"\(pid {proc.pid}\)"):
            StateDirLock(tmp_path).acquire()
    finally:
        proc.kill()
        proc.wait(timeout=10)
    # The kernel released the dead holder's lock.
    with StateDirLock(tmp_path):
        pass
