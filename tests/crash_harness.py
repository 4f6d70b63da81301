"""Crash harness: runs a real Supervisor and SIGKILLs its own process after a journal step.

    python -m tests.crash_harness CONFIG.json

CONFIG: {"base_url", "urls": {server: health url}, "state_dir", "target",
"kill_after": "planned" | "submitting" | "submitted" | "task_done" | "verified" | null}

The world is the one of tests/engine_world.py (group "web": ns1 → ns2, two blocks). With
`kill_after`, the process kills itself with SIGKILL — no cleanup, no flush, exactly a crash
— right after that step was durably written for the first time. Without it, it runs until
every block of "web" is on `target` and no move is in flight, then exits 0 (1 on timeout).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Literal

from prometheus_client import CollectorRegistry

from failoverd.checks import HealthMonitor
from failoverd.hooks import Hooks
from failoverd.journal import Journal
from failoverd.metrics import Metrics
from failoverd.model import Health, JournaledMove, JournalStep
from failoverd.ovhapi import OvhClient
from failoverd.supervisor import Supervisor
from tests.engine_world import CREDS, crash_world_policy

DEADLINE = 30.0


class CrashingJournal(Journal):
    """A journal that dies right after writing one chosen step."""

    kill_after: str | None = None

    def _die_if(self, step: str) -> None:
        if step == self.kill_after:
            print(f"harness: SIGKILL after {step}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    async def create_move(self, move: JournaledMove) -> None:
        await super().create_move(move)
        self._die_if("planned")

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
        await super().step(
            move_id, block, target, step, at=at, task_id=task_id, via=via, reason=reason
        )
        self._die_if(step)


async def main(config: dict[str, Any]) -> int:
    policy = crash_world_policy(config["base_url"], config["urls"], Path(config["state_dir"]))
    metrics = Metrics(CollectorRegistry())
    api = OvhClient.from_policy(policy.api, metrics, credentials=CREDS)
    health = HealthMonitor(policy, metrics)
    journal = CrashingJournal.open(policy.daemon.state_dir)
    assert isinstance(journal, CrashingJournal)
    journal.kill_after = config.get("kill_after")
    supervisor = Supervisor(
        policy, api=api, health=health, journal=journal, recorder=metrics, hooks=Hooks()
    )
    stop = asyncio.Event()
    await health.start()
    run = asyncio.get_running_loop().create_task(supervisor.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    code = 1
    ready = False
    try:
        while loop.time() < deadline and not run.done():
            if not ready and all(
                (h := health.current().get(n)) is not None and h.health is Health.UP
                for n in ("ns2", "ns3")
            ):
                ready = True
                print("harness: standbys up", flush=True)
            snap = supervisor.snapshot()
            if not snap.in_flight and all(
                v == config["target"] for g in snap.groups for v in g.routing.values()
            ):
                code = 0
                break
            await asyncio.sleep(0.01)  # polling a condition with a deadline
    finally:
        stop.set()
        await run
        await health.stop()
        await api.close()
        await journal.close()
    print(f"harness: exit {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(Path(sys.argv[1]).read_text()))))
