"""The journal: a SQLite file in ``daemon.state_dir`` that prevents double moves.

A move is written down *before* its POST is sent and after every step of every block
(planned → submitting → submitted(task id) → task_done → verified | failed), so that after a
crash the supervisor follows what is in flight instead of sending it again (SPEC §5.8).
The same file keeps the audit trail (``failoverd history``) and the engine state that must
survive a restart (cooldowns, pauses, the max_failovers window).

Durability: WAL with ``synchronous=FULL`` — a write has reached the disk when the call
returns. SQLite is blocking, so every call runs on ONE dedicated thread (a single-worker
executor): the event loop never waits on an fsync, and the single thread serialises
writes in the order they were made. A write costs a fsync (~1 ms on a local SSD); it is on
the move path only where durability is the point (before the POST and after each step).

``StateDirLock`` is the single-instance lock: ``flock`` on ``state_dir/lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from failoverd.errors import AlreadyRunning, FailoverdError
from failoverd.model import (
    BlockStep,
    HistoryEntry,
    JournaledMove,
    JournalStep,
    PersistedGroup,
    PersistedState,
    Trigger,
)

T = TypeVar("T")

SCHEMA_VERSION = 2  # 2: moves.force
JOURNAL_FILE = "journal.sqlite3"
LOCK_FILE = "lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS moves (
    id       TEXT PRIMARY KEY,
    grp      TEXT NOT NULL,
    trigger  TEXT NOT NULL,
    target   TEXT NOT NULL,
    blocks   TEXT NOT NULL,      -- JSON list of block strings
    dry_run  INTEGER NOT NULL,
    reason   TEXT NOT NULL,
    created  REAL NOT NULL,
    result   TEXT,               -- NULL while the move is open
    finished REAL,
    force    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS moves_open ON moves (result) WHERE result IS NULL;
CREATE TABLE IF NOT EXISTS steps (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    move_id TEXT NOT NULL REFERENCES moves (id),
    block   TEXT NOT NULL,
    target  TEXT NOT NULL,
    step    TEXT NOT NULL,
    task_id INTEGER,
    via     TEXT,
    reason  TEXT,
    at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_move ON steps (move_id);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    grp     TEXT,
    kind    TEXT NOT NULL,
    message TEXT NOT NULL,
    move_id TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_grp ON events (grp, id);
CREATE TABLE IF NOT EXISTS engine_state (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    data  TEXT NOT NULL,
    saved REAL NOT NULL
);
"""

# Columns by name: a journal migrated from version 1 has `force` last, a new one too, but
# naming them keeps the reader independent of the order the columns were added in.
_MOVE_SELECT = (
    "SELECT id, grp, trigger, target, blocks, dry_run, reason, created, result, finished, force"
    " FROM moves"
)

Details = Mapping[str, str | int | float | bool | None]


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a journal written by an older failoverd up to SCHEMA_VERSION, in place.

    `CREATE TABLE IF NOT EXISTS` leaves an existing table as it was, so columns added since
    are added here. Version 1 had no `moves.force`: its moves were not forced as far as a
    replay knows (the default), which is what that version did with them.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(moves)")}
    if "force" not in columns:
        conn.execute("ALTER TABLE moves ADD COLUMN force INTEGER NOT NULL DEFAULT 0")


class JournalError(FailoverdError):
    """The journal file cannot be opened, read or written."""


class Journal:
    """SQLite journal; implements ``ports.Journal``. Open with ``Journal.open(state_dir)``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        # The connection is created on the journal thread and only ever used there.
        self._executor.submit(self._connect).result()

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create state directory {state_dir}: {exc}") from exc
        return cls(state_dir / JOURNAL_FILE)

    # ------------------------------------------------------------------ thread side

    def _connect(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {self.path} has schema version {version}, newer than this "
                    f"failoverd understands ({SCHEMA_VERSION})"
                )
            conn.executescript(_SCHEMA)
            _migrate(conn)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._conn

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    conn.execute(sql, params)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(f"cannot write journal {self.path}: {exc}") from exc

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    # ------------------------------------------------------------------ moves

    async def create_move(self, move: JournaledMove) -> None:
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                "INSERT INTO moves"
                " (id, grp, trigger, target, blocks, dry_run, reason, created, force)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    move.move_id,
                    move.group,
                    move.trigger,
                    move.target,
                    json.dumps(list(move.blocks)),
                    int(move.dry_run),
                    move.reason,
                    move.created,
                    int(move.force),
                ),
            )
        ]
        for block in move.blocks:
            statements.append(_step_sql(move.move_id, block, move.target, "planned", move.created))
        statements.append(
            _event_sql(
                move.created,
                move.group,
                "move",
                move.reason,
                move.move_id,
                {
                    "trigger": move.trigger,
                    "target": move.target,
                    "blocks": " ".join(move.blocks),
                    "dry_run": move.dry_run,
                    "force": move.force,
                },
            )
        )
        await self._run(lambda: self._write(statements))

    async def step(
        self,
        move_id: str,
        block: str,
        target: str,
        step: JournalStep,
        *,
        at: float,
        task_id: int | None = None,
        via: Literal["dedicated", "ip"] | None = None,
        reason: str | None = None,
    ) -> None:
        def write() -> None:
            row = self._db().execute("SELECT grp FROM moves WHERE id = ?", (move_id,)).fetchone()
            if row is None:
                raise JournalError(f"journal has no move {move_id}")
            text = f"{block} → {target}: {step}"
            if task_id is not None:
                text += f" (task {task_id})"
            if reason:
                text += f": {reason}"
            details: dict[str, str | int | float | bool | None] = {
                "block": block,
                "target": target,
                "step": step,
            }
            if task_id is not None:
                details["task_id"] = task_id
            self._write(
                [
                    _step_sql(move_id, block, target, step, at, task_id, via, reason),
                    _event_sql(at, row[0], "step", text, move_id, details),
                ]
            )

        await self._run(write)

    async def finish_move(self, move_id: str, result: str, *, at: float, reason: str) -> None:
        def write() -> None:
            row = self._db().execute("SELECT grp FROM moves WHERE id = ?", (move_id,)).fetchone()
            if row is None:
                raise JournalError(f"journal has no move {move_id}")
            self._write(
                [
                    (
                        "UPDATE moves SET result = ?, finished = ? WHERE id = ?",
                        (result, at, move_id),
                    ),
                    _event_sql(at, row[0], "move", reason, move_id, {"result": result}),
                ]
            )

        await self._run(write)

    async def unfinished_moves(self) -> list[JournaledMove]:
        def read() -> list[JournaledMove]:
            rows = (
                self._db()
                .execute(_MOVE_SELECT + " WHERE result IS NULL ORDER BY created, id")
                .fetchall()
            )
            return [self._move(row) for row in rows]

        return await self._run(read)

    async def get_move(self, move_id: str) -> JournaledMove | None:
        def read() -> JournaledMove | None:
            row = self._db().execute(_MOVE_SELECT + " WHERE id = ?", (move_id,)).fetchone()
            return self._move(row) if row is not None else None

        return await self._run(read)

    async def moves(self, group: str | None = None) -> list[JournaledMove]:
        """Every move (of `group`), oldest first — for tests and tooling."""

        def read() -> list[JournaledMove]:
            sql = _MOVE_SELECT
            params: tuple[Any, ...] = ()
            if group is not None:
                sql += " WHERE grp = ?"
                params = (group,)
            rows = self._db().execute(sql + " ORDER BY created, id", params).fetchall()
            return [self._move(row) for row in rows]

        return await self._run(read)

    async def all_steps(self, move_id: str) -> list[BlockStep]:
        """Every step ever written for a move, in order (the whole story, not the latest)."""

        def read() -> list[BlockStep]:
            rows = (
                self._db()
                .execute(
                    "SELECT block, target, step, at, task_id, via, reason FROM steps"
                    " WHERE move_id = ? ORDER BY seq",
                    (move_id,),
                )
                .fetchall()
            )
            return [_block_step(row) for row in rows]

        return await self._run(read)

    def _move(self, row: tuple[Any, ...]) -> JournaledMove:
        (
            move_id,
            group,
            trigger,
            target,
            blocks,
            dry_run,
            reason,
            created,
            result,
            finished,
            force,
        ) = row
        latest: dict[tuple[str, str], BlockStep] = {}
        known: dict[tuple[str, str], tuple[int | None, str | None]] = {}
        for srow in self._db().execute(
            "SELECT block, target, step, at, task_id, via, reason FROM steps"
            " WHERE move_id = ? ORDER BY seq",
            (move_id,),
        ):
            step = _block_step(srow)
            key = (step.block, step.target)
            task_id, via = known.get(key, (None, None))
            # Later steps need not repeat the task id: carry it forward.
            task_id = step.task_id if step.task_id is not None else task_id
            via = step.via if step.via is not None else via
            known[key] = (task_id, via)
            latest[key] = BlockStep(
                block=step.block,
                target=step.target,
                step=step.step,
                at=step.at,
                task_id=task_id,
                via=cast("Literal['dedicated', 'ip'] | None", via),
                reason=step.reason,
            )
        return JournaledMove(
            move_id=move_id,
            group=group,
            trigger=cast(Trigger, trigger),
            target=target,
            blocks=tuple(json.loads(blocks)),
            dry_run=bool(dry_run),
            created=created,
            reason=reason,
            result=result,
            finished=finished,
            steps=tuple(latest.values()),
            force=bool(force),
        )

    # ------------------------------------------------------------------ history

    async def record(
        self,
        kind: str,
        message: str,
        *,
        at: float,
        group: str | None = None,
        move_id: str | None = None,
        details: Details | None = None,
    ) -> None:
        statement = _event_sql(at, group, kind, message, move_id, details or {})
        await self._run(lambda: self._write([statement]))

    async def history(self, group: str | None, limit: int) -> list[HistoryEntry]:
        def read() -> list[HistoryEntry]:
            sql = "SELECT id, at, grp, kind, message, move_id, details FROM events"
            params: tuple[Any, ...] = ()
            if group is not None:
                sql += " WHERE grp = ?"
                params = (group,)
            sql += " ORDER BY id DESC LIMIT ?"
            rows = self._db().execute(sql, (*params, max(0, limit))).fetchall()
            return [
                HistoryEntry(
                    id=row[0],
                    at=row[1],
                    group=row[2],
                    kind=row[3],
                    message=row[4],
                    move_id=row[5],
                    details=json.loads(row[6]),
                )
                for row in reversed(rows)
            ]

        return await self._run(read)

    # ------------------------------------------------------------------ engine state

    async def load_state(self) -> PersistedState | None:
        def read() -> PersistedState | None:
            row = self._db().execute("SELECT data FROM engine_state WHERE id = 1").fetchone()
            if row is None:
                return None
            try:
                data = json.loads(row[0])
                return PersistedState(
                    groups={
                        name: PersistedGroup(**fields) for name, fields in data["groups"].items()
                    },
                    failovers=tuple(float(t) for t in data.get("failovers", ())),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise JournalError(f"journal {self.path}: unreadable engine state: {exc}") from exc

        return await self._run(read)

    async def save_state(self, state: PersistedState, *, at: float) -> None:
        data = json.dumps(
            {
                "groups": {
                    name: {
                        "cooldown_until": g.cooldown_until,
                        "paused": g.paused,
                        "pause_until": g.pause_until,
                        "pause_reason": g.pause_reason,
                        "last_move_at": g.last_move_at,
                    }
                    for name, g in state.groups.items()
                },
                "failovers": list(state.failovers),
            },
            sort_keys=True,
        )
        statement = (
            "INSERT INTO engine_state (id, data, saved) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET data = excluded.data, saved = excluded.saved",
            (data, at),
        )
        await self._run(lambda: self._write([statement]))

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_conn)
        self._closed = True
        self._executor.shutdown(wait=True)

    def close_sync(self) -> None:
        """Close from synchronous code (tests, shutdown after the loop ended)."""
        if self._closed:
            return
        self._executor.submit(self._close_conn).result()
        self._closed = True
        self._executor.shutdown(wait=True)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _step_sql(
    move_id: str,
    block: str,
    target: str,
    step: JournalStep,
    at: float,
    task_id: int | None = None,
    via: str | None = None,
    reason: str | None = None,
) -> tuple[str, tuple[Any, ...]]:
    return (
        "INSERT INTO steps (move_id, block, target, step, task_id, via, reason, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (move_id, block, target, step, task_id, via, reason, at),
    )


def _event_sql(
    at: float,
    group: str | None,
    kind: str,
    message: str,
    move_id: str | None,
    details: Details,
) -> tuple[str, tuple[Any, ...]]:
    return (
        "INSERT INTO events (at, grp, kind, message, move_id, details) VALUES (?, ?, ?, ?, ?, ?)",
        (at, group, kind, message, move_id, json.dumps(dict(details), sort_keys=True)),
    )


def _block_step(row: tuple[Any, ...]) -> BlockStep:
    block, target, step, at, task_id, via, reason = row
    return BlockStep(
        block=block,
        target=target,
        step=step,
        at=at,
        task_id=task_id,
        via=via,
        reason=reason,
    )


class StateDirLock:
    """Only one failoverd per state directory: an exclusive ``flock`` on ``state_dir/lock``.

    The kernel drops the lock when the process dies, however it dies, so a crash never
    leaves a stale lock behind. The holder's pid is written into the file for the message.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise FailoverdError(f"cannot use state directory {self.state_dir}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid else "pid unknown"
            raise AlreadyRunning(
                f"another failoverd ({who}) is running with state directory {self.state_dir}"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise FailoverdError(f"cannot lock {self.path}: {exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> StateDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
