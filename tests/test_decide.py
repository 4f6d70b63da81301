"""Table tests of the pure decision core (SPEC §5): no event loop, no mocks, exact sentences.

Each row is (id, state, observation, policy, expected actions, group sentence, group status).
The world: six servers ns1…ns6 all up; group ``web`` = primary ns1, standbys ns2, ns3, with two
blocks routed to ns1. Rows change only what their rule needs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from failoverd.decide import (
    Action,
    Blocked,
    DriftDetected,
    EngineState,
    GroupState,
    Observation,
    Refusal,
    StartMove,
    apply_policy,
    candidates,
    cannot_take,
    clock,
    decide,
    eligible_standbys,
    holder,
    human_duration,
    move_abandoned,
    move_finished,
    move_started,
    move_vetoed,
    pause,
    plan_manual_move,
    plan_retry,
    resume,
    zone_compatible,
)
from failoverd.model import Eligibility, GroupStatus, Health, ServerHealth, ServiceInfo
from failoverd.policy import (
    ApiPolicy,
    Block,
    DaemonPolicy,
    FailbackPolicy,
    GroupPolicy,
    GuardsPolicy,
    MassFailure,
    MaxFailovers,
    Policy,
    ServerPolicy,
    TcpCheck,
)

NOW = datetime(2026, 12, 3, 14, 0, 0, tzinfo=UTC).timestamp()
B1, B2, B3 = "203.0.113.8/29", "198.51.100.7/32", "192.0.2.64/28"
BOTH = (B1, B2)
SERVERS = ("ns1", "ns2", "ns3", "ns4", "ns5", "ns6")


def net(text: str) -> Block:
    return ipaddress.ip_network(text)


def group(
    name: str = "web",
    primary: str = "ns1",
    standbys: tuple[str, ...] = ("ns2", "ns3"),
    blocks: tuple[str, ...] = BOTH,
    **kw: Any,
) -> GroupPolicy:
    return GroupPolicy(name, primary, standbys, tuple(net(b) for b in blocks), **kw)


def make_policy(
    *groups: GroupPolicy,
    servers: Iterable[str] = SERVERS,
    capacity: Mapping[str, int] | None = None,
    dry_run: bool = False,
    mass: MassFailure | None = None,
    max_failovers: MaxFailovers | None = None,
) -> Policy:
    caps = capacity or {}
    return Policy(
        api=ApiPolicy(),
        daemon=DaemonPolicy(dry_run=dry_run),
        guards=GuardsPolicy(
            mass_failure=mass or MassFailure(), max_failovers=max_failovers or MaxFailovers()
        ),
        servers={n: ServerPolicy(n, (TcpCheck(n, 22),), capacity=caps.get(n)) for n in servers},
        groups={g.name: g for g in (groups or (group(),))},
    )


POLICY = make_policy()
WEB = POLICY.groups["web"]


def up(name: str, since: float = NOW - 3600, canary: bool = False) -> ServerHealth:
    return ServerHealth(name, Health.UP, False, since, NOW, "ok", consecutive_ok=9, canary=canary)


def down(name: str, fails: int = 3) -> ServerHealth:
    return ServerHealth(
        name, Health.DOWN, True, NOW - 6, NOW, "connection refused", consecutive_fail=fails
    )


def failing(name: str, canary: bool = False) -> ServerHealth:
    """Up, but its latest round failed: counts for the mass-failure guard at once."""
    return ServerHealth(
        name, Health.UP, True, NOW - 3600, NOW, "timeout", consecutive_fail=1, canary=canary
    )


def unknown(name: str) -> ServerHealth:
    return ServerHealth(name, Health.UNKNOWN, False, NOW, None, "no round yet")


def obs(
    *changes: ServerHealth,
    routing: Mapping[str, str | None] | None = None,
    now: float = NOW,
    eligibility: Mapping[tuple[str, str], Eligibility] | None = None,
    services: Mapping[str, ServiceInfo] | None = None,
    block_regions: Mapping[str, tuple[str, ...]] | None = None,
    drop: Iterable[str] = (),
) -> Observation:
    health = {n: up(n) for n in (*SERVERS, "vps-1")}
    health.update({h.name: h for h in changes})
    for name in drop:
        del health[name]
    return Observation(
        now=now,
        health=health,
        routing={B1: "ns1", B2: "ns1"} if routing is None else routing,
        eligibility=eligibility or {},
        services=services or {},
        block_regions=block_regions or {},
    )


def state(policy: Policy = POLICY, failovers: tuple[float, ...] = (), **web: Any) -> EngineState:
    s = EngineState.initial(policy)
    return replace(s, groups={**s.groups, "web": GroupState(**web)}, failovers=failovers)


def on(server: str, *blocks: str) -> Mapping[str, str | None]:
    return dict.fromkeys(blocks or BOTH, server)


def no(reason: str) -> Eligibility:
    return Eligibility(False, reason)


def svc(name: str, region: str, kind: str = "dedicated") -> ServiceInfo:
    return ServiceInfo(name, kind, region, None, vmac_supported=True)  # type: ignore[arg-type]


def move(
    target: str,
    reason: str,
    considered: tuple[tuple[str, str], ...] | None = None,
    *,
    trigger: str = "auto",
    blocks: tuple[str, ...] = BOTH,
    group: str = "web",
    **kw: Any,
) -> StartMove:
    return StartMove(
        group=group,
        target=target,
        blocks=blocks,
        trigger=trigger,  # type: ignore[arg-type]
        reason=reason,
        considered=considered if considered is not None else ((target, "chosen"),),
        **kw,
    )


DOWN3 = "primary ns1 down for 3 checks"
MASS = "mass failure: 3 of 6 servers failing (≥ 50%); automatic moves frozen"
CANARY = "canary: all 2 canaries failing; failoverd itself may be cut off; automatic moves frozen"
FIVE = tuple(NOW - 3000 + i * 60 for i in range(5))
MAXF = (
    "max failovers: 5 automatic failovers in the last 1h (limit 5); "
    "automatic moves frozen until 14:10:00Z"
)
COOL = "web in cooldown for 9m12s after the move at 13:59:12Z"
IN_COOLDOWN: dict[str, Any] = {"cooldown_until": NOW + 552, "last_move_at": NOW - 48}
GRA = {B1: ("eu-west-gra",), B2: ("eu-west-gra",)}
FB_AUTO = make_policy(group(failback=FailbackPolicy("auto", after=600)))
TWO_GROUPS = make_policy(
    group(),
    group("db", primary="ns4", standbys=("ns2", "ns3"), blocks=(B3,)),
    capacity={"ns2": 1},
)

N, F, D, M, P = (
    GroupStatus.NOMINAL,
    GroupStatus.FAILED_OVER,
    GroupStatus.DEGRADED,
    GroupStatus.MOVING,
    GroupStatus.PAUSED,
)
DR = GroupStatus.DRIFT

Row = tuple[str, EngineState, Observation, Policy, tuple[Action, ...], str, GroupStatus]

ROWS: list[Row] = [
    # --- trigger: only a `down` holder, never unknown or merely failing
    ("all up", state(), obs(), POLICY, (), "web on primary ns1 (up)", N),
    (
        "unknown health never triggers",
        state(),
        obs(unknown("ns1")),
        POLICY,
        (),
        "web on primary ns1 (health unknown)",
        N,
    ),
    (
        "missing health is unknown",
        state(),
        obs(drop=["ns1"]),
        POLICY,
        (),
        "web on primary ns1 (health unknown)",
        N,
    ),
    (
        "failing but not down yet",
        state(),
        obs(failing("ns1")),
        POLICY,
        (),
        "web on primary ns1 (up)",
        N,
    ),
    (
        "a down standby that holds nothing changes nothing",
        state(),
        obs(down("ns2")),
        POLICY,
        (),
        "web on primary ns1 (up)",
        N,
    ),
    # --- target order and skips
    (
        "primary down: first standby",
        state(),
        obs(down("ns1")),
        POLICY,
        (move("ns2", f"{DOWN3}; moving 2 blocks to ns2"),),
        f"{DOWN3}; moving 2 blocks to ns2",
        N,
    ),
    (
        "down standby skipped",
        state(),
        obs(down("ns1"), down("ns2", fails=7)),
        POLICY,
        (
            move(
                "ns3",
                f"{DOWN3}; moving 2 blocks to ns3; skipped ns2 down",
                (("ns2", "down"), ("ns3", "chosen")),
            ),
        ),
        f"{DOWN3}; moving 2 blocks to ns3; skipped ns2 down",
        N,
    ),
    (
        "unknown standby skipped",
        state(),
        obs(down("ns1"), unknown("ns2")),
        POLICY,
        (
            move(
                "ns3",
                f"{DOWN3}; moving 2 blocks to ns3; skipped ns2 health unknown",
                (("ns2", "health unknown"), ("ns3", "chosen")),
            ),
        ),
        f"{DOWN3}; moving 2 blocks to ns3; skipped ns2 health unknown",
        N,
    ),
    (
        "standby at capacity skipped (it holds db as a standby)",
        state(TWO_GROUPS),
        obs(down("ns1"), routing={**on("ns1"), B3: "ns2"}),
        TWO_GROUPS,
        (
            move(
                "ns3",
                f"{DOWN3}; moving 2 blocks to ns3; skipped ns2 at capacity (1 of 1 groups)",
                (("ns2", "at capacity (1 of 1 groups)"), ("ns3", "chosen")),
            ),
        ),
        f"{DOWN3}; moving 2 blocks to ns3; skipped ns2 at capacity (1 of 1 groups)",
        N,
    ),
    (
        "capacity counts a move in flight towards the standby",
        replace(
            state(TWO_GROUPS),
            groups={"web": GroupState(), "db": GroupState(moving="m-7", moving_to="ns2")},
        ),
        obs(down("ns1"), routing={**on("ns1"), B3: "ns4"}),
        TWO_GROUPS,
        (
            move(
                "ns3",
                f"{DOWN3}; moving 2 blocks to ns3; skipped ns2 at capacity (1 of 1 groups)",
                (("ns2", "at capacity (1 of 1 groups)"), ("ns3", "chosen")),
            ),
        ),
        f"{DOWN3}; moving 2 blocks to ns3; skipped ns2 at capacity (1 of 1 groups)",
        N,
    ),
    (
        "other zone skipped, GRA block to SBG allowed",
        state(),
        obs(
            down("ns1"),
            services={"ns2": svc("ns2", "ca-east-bhs"), "ns3": svc("ns3", "eu-west-sbg")},
            block_regions=GRA,
        ),
        POLICY,
        (
            move(
                "ns3",
                f"{DOWN3}; moving 2 blocks to ns3; "
                "skipped ns2 in ca-east-bhs cannot take blocks of eu-west-gra",
                (("ns2", "in ca-east-bhs cannot take blocks of eu-west-gra"), ("ns3", "chosen")),
            ),
        ),
        f"{DOWN3}; moving 2 blocks to ns3; "
        "skipped ns2 in ca-east-bhs cannot take blocks of eu-west-gra",
        N,
    ),
    (
        "known ineligible skipped, known eligible kept",
        state(),
        obs(
            down("ns1"),
            eligibility={
                ("ns2", B1): Eligibility(True, "eligible"),
                ("ns2", B2): no("this IP has duplicate virtual MACs"),
                ("ns3", B1): Eligibility(True, "eligible"),
            },
        ),
        POLICY,
        (
            move(
                "ns3",
                f"{DOWN3}; moving 2 blocks to ns3; "
                "skipped ns2 cannot take 198.51.100.7/32 (this IP has duplicate virtual MACs)",
                (
                    ("ns2", "cannot take 198.51.100.7/32 (this IP has duplicate virtual MACs)"),
                    ("ns3", "chosen"),
                ),
            ),
        ),
        f"{DOWN3}; moving 2 blocks to ns3; "
        "skipped ns2 cannot take 198.51.100.7/32 (this IP has duplicate virtual MACs)",
        N,
    ),
    (
        "only a /32 goes to a VPS",
        state(),
        obs(down("ns1"), services={"vps-1": svc("vps-1", "eu-west-gra", kind="vps")}),
        make_policy(group(standbys=("vps-1", "ns2")), servers=(*SERVERS, "vps-1")),
        (
            move(
                "ns2",
                f"{DOWN3}; moving 2 blocks to ns2; "
                "skipped vps-1 cannot take 203.0.113.8/29 (/29 to a VPS)",
                (("vps-1", "cannot take 203.0.113.8/29 (/29 to a VPS)"), ("ns2", "chosen")),
            ),
        ),
        f"{DOWN3}; moving 2 blocks to ns2; skipped vps-1 cannot take 203.0.113.8/29 (/29 to a VPS)",
        N,
    ),
    (
        "a /32 alone goes to a VPS",
        state(),
        obs(
            down("ns1"),
            routing=on("ns1", B2),
            services={"vps-1": svc("vps-1", "eu-west-gra", kind="vps")},
        ),
        make_policy(group(standbys=("vps-1", "ns2"), blocks=(B2,)), servers=(*SERVERS, "vps-1")),
        (move("vps-1", f"{DOWN3}; moving 1 block to vps-1", blocks=(B2,)),),
        f"{DOWN3}; moving 1 block to vps-1",
        N,
    ),
    (
        "no candidate: degraded, with every reason",
        state(),
        obs(down("ns1"), down("ns2"), eligibility={("ns3", B2): no("not allowed")}),
        POLICY,
        (
            Blocked(
                "web",
                "no_eligible_target",
                f"{DOWN3}, not moving; no eligible standby for web: "
                "ns2 down, ns3 cannot take 198.51.100.7/32 (not allowed)",
            ),
        ),
        f"{DOWN3}, not moving; no eligible standby for web: "
        "ns2 down, ns3 cannot take 198.51.100.7/32 (not allowed)",
        D,
    ),
    (
        "holder is a standby: the primary comes first",
        state(),
        obs(down("ns2", fails=4), routing=on("ns2")),
        POLICY,
        (move("ns1", "standby ns2 down for 4 checks; moving 2 blocks to ns1"),),
        "standby ns2 down for 4 checks; moving 2 blocks to ns1",
        F,
    ),
    (
        "holder is a standby and the primary is down: next standby",
        state(),
        obs(down("ns2"), down("ns1"), routing=on("ns2")),
        POLICY,
        (
            move(
                "ns3",
                "standby ns2 down for 3 checks; moving 2 blocks to ns3; skipped ns1 down",
                (("ns1", "down"), ("ns3", "chosen")),
            ),
        ),
        "standby ns2 down for 3 checks; moving 2 blocks to ns3; skipped ns1 down",
        F,
    ),
    (
        "only the blocks not already on the target move",
        state(),
        obs(down("ns1"), routing={B1: "ns1"}),  # B2 not read yet: moved too
        POLICY,
        (move("ns2", f"{DOWN3}; moving 2 blocks to ns2"),),
        f"{DOWN3}; moving 2 blocks to ns2",
        N,
    ),
    # --- what stops a trigger
    (
        "cooldown blocks an automatic move",
        state(**IN_COOLDOWN),
        obs(down("ns1")),
        POLICY,
        (Blocked("web", "cooldown", f"{DOWN3}, not moving; {COOL}"),),
        f"{DOWN3}, not moving; {COOL}",
        D,
    ),
    (
        "paused with an expiry and a reason",
        state(paused=True, pause_until=NOW + 3600, pause_reason="kernel upgrade"),
        obs(down("ns1")),
        POLICY,
        (
            Blocked(
                "web",
                "paused",
                f"{DOWN3}, not moving; web paused until 15:00:00Z (kernel upgrade)",
            ),
        ),
        f"{DOWN3}, not moving; web paused until 15:00:00Z (kernel upgrade)",
        P,
    ),
    (
        "paused until resumed",
        state(paused=True),
        obs(down("ns1")),
        POLICY,
        (Blocked("web", "paused", f"{DOWN3}, not moving; web paused"),),
        f"{DOWN3}, not moving; web paused",
        P,
    ),
    (
        "a paused healthy group is just paused",
        state(paused=True),
        obs(),
        POLICY,
        (),
        "web on primary ns1 (up)",
        P,
    ),
    (
        "pause expired by now: moves again",
        state(paused=True, pause_until=NOW, pause_reason="kernel upgrade"),
        obs(down("ns1")),
        POLICY,
        (move("ns2", f"{DOWN3}; moving 2 blocks to ns2"),),
        f"pause of web expired at 14:00:00Z; {DOWN3}; moving 2 blocks to ns2",
        N,
    ),
    (
        "a move in flight: never a second one",
        state(moving="m-1", moving_to="ns2"),
        obs(down("ns1")),
        POLICY,
        (),
        "move m-1 of web to ns2 in flight",
        M,
    ),
    (
        "Blocked only once for the same reason",
        state(blocked="cooldown", **IN_COOLDOWN),
        obs(down("ns1")),
        POLICY,
        (),
        f"{DOWN3}, not moving; {COOL}",
        D,
    ),
    (
        "Blocked again when its reason changes",
        state(blocked="cooldown", **IN_COOLDOWN),
        obs(down("ns1"), failing("ns2"), failing("ns3")),
        POLICY,
        (Blocked("web", "guard", f"{DOWN3}, not moving; {MASS}"),),
        f"{DOWN3}, not moving; {MASS}",
        D,
    ),
    # --- guards
    (
        "mass failure counts `failing` before `down`",
        state(),
        obs(down("ns1"), failing("ns2"), failing("ns3")),
        POLICY,
        (Blocked("web", "guard", f"{DOWN3}, not moving; {MASS}"),),
        f"{DOWN3}, not moving; {MASS}",
        D,
    ),
    (
        "mass failure needs min_servers",
        state(),
        obs(down("ns1"), failing("ns3"), drop=["ns4", "ns5", "ns6", "vps-1"]),
        make_policy(servers=("ns1", "ns2", "ns3", "ns4")),  # 2 of 4 is 50% but < 3 servers
        (move("ns2", f"{DOWN3}; moving 2 blocks to ns2"),),
        f"{DOWN3}; moving 2 blocks to ns2",
        N,
    ),
    (
        "mass failure needs the fraction",
        state(),
        obs(down("ns1"), failing("ns4"), failing("ns5")),
        make_policy(mass=MassFailure(fraction=0.6, min_servers=3)),  # 3 of 6 < 60%
        (move("ns2", f"{DOWN3}; moving 2 blocks to ns2"),),
        f"{DOWN3}; moving 2 blocks to ns2",
        N,
    ),
    (
        "every canary failing freezes moves",
        state(),
        obs(down("ns1"), failing("c1", canary=True), failing("c2", canary=True)),
        POLICY,
        (Blocked("web", "guard", f"{DOWN3}, not moving; {CANARY}"),),
        f"{DOWN3}, not moving; {CANARY}",
        D,
    ),
    (
        "no canaries configured: no canary guard",
        state(),
        obs(down("ns1")),  # no health entry has canary=True
        POLICY,
        (move("ns2", f"{DOWN3}; moving 2 blocks to ns2"),),
        f"{DOWN3}; moving 2 blocks to ns2",
        N,
    ),
    (
        "one canary answering is enough",
        state(),
        obs(down("ns1"), failing("c1", canary=True), up("c2", canary=True)),
        POLICY,
        (move("ns2", f"{DOWN3}; moving 2 blocks to ns2"),),
        f"{DOWN3}; moving 2 blocks to ns2",
        N,
    ),
    (
        "max_failovers reached in the window",
        state(failovers=FIVE),
        obs(down("ns1")),
        POLICY,
        (Blocked("web", "guard", f"{DOWN3}, not moving; {MAXF}"),),
        f"{DOWN3}, not moving; {MAXF}",
        D,
    ),
    (
        "max_failovers window has slid past the oldest",
        state(failovers=(NOW - 3600, *FIVE[1:])),
        obs(down("ns1")),
        POLICY,
        (move("ns2", f"{DOWN3}; moving 2 blocks to ns2"),),
        f"{DOWN3}; moving 2 blocks to ns2",
        N,
    ),
    # --- dry run
    (
        "dry run decides and marks the move",
        state(),
        obs(down("ns1")),
        make_policy(dry_run=True),
        (move("ns2", f"dry run: {DOWN3}; moving 2 blocks to ns2", dry_run=True),),
        f"dry run: {DOWN3}; moving 2 blocks to ns2",
        N,
    ),
    # --- failback
    (
        "failback manual: blocks stay on the standby",
        state(),
        obs(routing=on("ns2")),
        POLICY,
        (),
        "web on standby ns2 (up); failback is manual",
        F,
    ),
    (
        "failback auto once the primary is up for `after`",
        state(),
        obs(up("ns1", since=NOW - 600), routing=on("ns2")),
        FB_AUTO,
        (
            move(
                "ns1",
                "failback: primary ns1 up for 10m; moving 2 blocks to ns1",
                trigger="failback",
            ),
        ),
        "failback: primary ns1 up for 10m; moving 2 blocks to ns1",
        F,
    ),
    (
        "failback auto waits for `after`",
        state(),
        obs(up("ns1", since=NOW - 252), routing=on("ns2")),
        FB_AUTO,
        (),
        "web on standby ns2 (up); failback to ns1 in 5m48s (up for 4m12s of 10m)",
        F,
    ),
    (
        "failback auto waits for the cooldown",
        state(cooldown_until=NOW + 120, last_move_at=NOW - 480),
        obs(routing=on("ns2")),
        FB_AUTO,
        (),
        "web on standby ns2 (up); failback waits: "
        "web in cooldown for 2m after the move at 13:52:00Z",
        F,
    ),
    (
        "failback auto: primary down, no failback",
        state(),
        obs(down("ns1"), routing=on("ns2")),
        FB_AUTO,
        (),
        "web on standby ns2 (up); primary ns1 down, no failback",
        F,
    ),
    (
        "failback auto frozen by a guard",
        state(),
        obs(failing("ns4"), failing("ns5"), failing("ns6"), routing=on("ns2")),
        FB_AUTO,
        (
            Blocked(
                "web",
                "guard",
                f"failback: primary ns1 up for 1h, not moving; {MASS}",
            ),
        ),
        f"failback: primary ns1 up for 1h, not moving; {MASS}",
        F,
    ),
    (
        "failback auto waits while paused",
        state(paused=True),
        obs(routing=on("ns2")),
        FB_AUTO,
        (Blocked("web", "paused", "failback: primary ns1 up for 1h, not moving; web paused"),),
        "failback: primary ns1 up for 1h, not moving; web paused",
        P,
    ),
    (
        "failback auto to an ineligible primary: stays, not degraded",
        state(),
        obs(routing=on("ns2"), eligibility={("ns1", B1): no("not allowed")}),
        FB_AUTO,
        (),
        "failback: primary ns1 up for 1h but cannot take web back: "
        "ns1 cannot take 203.0.113.8/29 (not allowed)",
        F,
    ),
    # --- holder and drift
    (
        "drift across two servers: reported, never fixed",
        state(),
        obs(down("ns1"), routing={B1: "ns1", B2: "ns2"}),
        POLICY,
        (DriftDetected("web", "blocks of web routed to ns1 and ns2"),),
        "blocks of web routed to ns1 and ns2",
        DR,
    ),
    (
        "drift outside the group",
        state(),
        obs(routing=on("ns9")),
        POLICY,
        (DriftDetected("web", "blocks of web routed to ns9, outside the group"),),
        "blocks of web routed to ns9, outside the group",
        DR,
    ),
    (
        "drift reported once",
        state(drift="blocks of web routed to ns9, outside the group"),
        obs(routing=on("ns9")),
        POLICY,
        (),
        "blocks of web routed to ns9, outside the group",
        DR,
    ),
    (
        "parked blocks",
        state(),
        obs(routing={B1: None, B2: ""}),
        POLICY,
        (DriftDetected("web", "blocks of web parked (routed to no service)"),),
        "blocks of web parked (routed to no service)",
        DR,
    ),
    (
        "routing not read yet",
        state(),
        obs(down("ns1"), routing={}),
        POLICY,
        (),
        ("routing of web not read yet"),
        N,
    ),
]


@pytest.mark.parametrize(
    ("st", "ob", "pol", "actions", "sentence", "status"),
    [pytest.param(*row[1:], id=row[0]) for row in ROWS],
)
def test_decide(
    st: EngineState,
    ob: Observation,
    pol: Policy,
    actions: tuple[Action, ...],
    sentence: str,
    status: GroupStatus,
) -> None:
    d = decide(st, ob, pol)
    assert d.actions == actions
    assert d.state.groups["web"].reason == sentence
    assert d.statuses["web"] is status


def test_two_groups_share_a_standby_of_capacity_one_in_one_cycle() -> None:
    d = decide(
        state(TWO_GROUPS),
        obs(down("ns1"), down("ns4"), routing={**on("ns1"), B3: "ns4"}),
        TWO_GROUPS,
    )
    assert d.actions == (
        move("ns2", f"{DOWN3}; moving 2 blocks to ns2"),
        move(
            "ns3",
            "primary ns4 down for 3 checks; moving 1 block to ns3; "
            "skipped ns2 at capacity (1 of 1 groups)",
            (("ns2", "at capacity (1 of 1 groups)"), ("ns3", "chosen")),
            group="db",
            blocks=(B3,),
        ),
    )


# --------------------------------------------------------------------------- manual moves

MANUAL = "manual move of web; moving 2 blocks from ns1"
ManualRow = tuple[str, EngineState, Observation, str, str | None, bool, StartMove | Refusal]

MANUAL_ROWS: list[ManualRow] = [
    (
        "to a named standby",
        state(),
        obs(),
        "web",
        "ns3",
        False,
        move("ns3", f"{MANUAL} to ns3", trigger="manual"),
    ),
    (
        "no target: the first eligible standby",
        state(),
        obs(down("ns2")),
        "web",
        None,
        False,
        move(
            "ns3",
            f"{MANUAL} to ns3; skipped ns2 down",
            (("ns2", "down"), ("ns3", "chosen")),
            trigger="manual",
        ),
    ),
    (
        "no target from a standby: the primary first",
        state(),
        obs(routing=on("ns2")),
        "web",
        None,
        False,
        move("ns1", "manual move of web; moving 2 blocks from ns2 to ns1", trigger="manual"),
    ),
    (
        "a paused group can still be moved by hand",
        state(paused=True),
        obs(),
        "web",
        "ns2",
        False,
        move("ns2", f"{MANUAL} to ns2", trigger="manual"),
    ),
    ("unknown group", state(), obs(), "nope", None, False, Refusal(404, "unknown group nope")),
    (
        "unknown target",
        state(),
        obs(),
        "web",
        "ns9",
        False,
        Refusal(404, "ns9 is not a server of group web (primary ns1, standbys ns2, ns3)"),
    ),
    (
        "target down",
        state(),
        obs(down("ns2")),
        "web",
        "ns2",
        False,
        Refusal(422, "cannot move web to ns2: ns2 down"),
    ),
    (
        "target down, even with force",
        state(),
        obs(down("ns2")),
        "web",
        "ns2",
        True,
        Refusal(422, "cannot move web to ns2: ns2 down"),
    ),
    (
        "target ineligible, even with force",
        state(),
        obs(eligibility={("ns2", B1): no("not allowed")}),
        "web",
        "ns2",
        True,
        Refusal(422, "cannot move web to ns2: ns2 cannot take 203.0.113.8/29 (not allowed)"),
    ),
    (
        "target in another zone",
        state(),
        obs(services={"ns2": svc("ns2", "ca-east-bhs")}, block_regions=GRA),
        "web",
        "ns2",
        False,
        Refusal(
            422, "cannot move web to ns2: ns2 in ca-east-bhs cannot take blocks of eu-west-gra"
        ),
    ),
    (
        "no candidate at all",
        state(),
        obs(down("ns2"), unknown("ns3")),
        "web",
        None,
        False,
        Refusal(422, "no eligible standby for web: ns2 down, ns3 health unknown"),
    ),
    (
        "cooldown without force",
        state(**IN_COOLDOWN),
        obs(),
        "web",
        "ns2",
        False,
        Refusal(409, f"{COOL}; use --force to move anyway"),
    ),
    (
        "cooldown with force",
        state(**IN_COOLDOWN),
        obs(),
        "web",
        "ns2",
        True,
        move("ns2", f"{MANUAL} to ns2; forced past: {COOL}", trigger="manual", force=True),
    ),
    (
        "guard without force",
        state(),
        obs(failing("ns4"), failing("ns5"), failing("ns6")),
        "web",
        "ns2",
        False,
        Refusal(409, f"{MASS}; use --force to move anyway"),
    ),
    (
        "guard with force",
        state(),
        obs(failing("ns4"), failing("ns5"), failing("ns6")),
        "web",
        "ns2",
        True,
        move("ns2", f"{MANUAL} to ns2; forced past: {MASS}", trigger="manual", force=True),
    ),
    (
        "a move in flight",
        state(moving="m-1"),
        obs(),
        "web",
        "ns2",
        True,
        Refusal(409, "move m-1 of web already in flight"),
    ),
    (
        "already there",
        state(),
        obs(),
        "web",
        "ns1",
        False,
        Refusal(409, "every block of web is already on ns1"),
    ),
    (
        "drift: gather the strays on the named server",
        state(),
        obs(routing={B1: "ns1", B2: "ns2"}),
        "web",
        "ns1",
        False,
        move("ns1", "manual move of web; moving 1 block to ns1", trigger="manual", blocks=(B2,)),
    ),
]


@pytest.mark.parametrize(
    ("st", "ob", "name", "to", "force", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in MANUAL_ROWS],
)
def test_plan_manual_move(
    st: EngineState,
    ob: Observation,
    name: str,
    to: str | None,
    force: bool,
    expected: StartMove | Refusal,
) -> None:
    assert plan_manual_move(st, ob, POLICY, name, to=to, force=force, dry_run=False) == expected


def test_manual_dry_run_is_marked() -> None:
    planned = plan_manual_move(state(), obs(), POLICY, "web", to="ns2", force=False, dry_run=True)
    assert planned == move("ns2", f"dry run: {MANUAL} to ns2", trigger="manual", dry_run=True)


# --------------------------------------------------------------------------- holder, zones


@pytest.mark.parametrize(
    ("routing", "expected"),
    [
        pytest.param(on("ns1"), ("ns1", None), id="all on the primary"),
        pytest.param(on("ns3"), ("ns3", None), id="all on a standby"),
        pytest.param({B2: "ns2"}, ("ns2", None), id="only the blocks read so far count"),
        pytest.param({}, (None, None), id="nothing read yet"),
        pytest.param(
            {B1: None, B2: None}, (None, "blocks of web parked (routed to no service)"), id="parked"
        ),
        pytest.param(
            {B1: "ns1", B2: None},
            (None, "blocks of web routed to ns1 and nowhere (parked)"),
            id="partly parked",
        ),
        pytest.param(
            {B1: "ns1", B2: "ns2"}, (None, "blocks of web routed to ns1 and ns2"), id="split"
        ),
        pytest.param(
            on("ns9"), (None, "blocks of web routed to ns9, outside the group"), id="outside"
        ),
        pytest.param(
            {B1: "ns2", B2: "ns9"},
            (None, "blocks of web routed to ns2 and ns9; ns9 outside the group"),
            id="split and outside",
        ),
    ],
)
def test_holder(routing: Mapping[str, str | None], expected: tuple[str | None, str | None]) -> None:
    assert holder(WEB, routing) == expected


def test_holder_of_three_servers_names_them_all() -> None:
    g = group(blocks=(B1, B2, B3))
    assert holder(g, {B1: "ns1", B2: "ns2", B3: "ns3"}) == (
        None,
        "blocks of web routed to ns1, ns2 and ns3",
    )


@pytest.mark.parametrize(
    ("server", "block", "ok"),
    [
        ("eu-west-gra", "eu-west-gra", True),
        ("eu-west-gra", "eu-west-sbg", True),
        ("eu-west-rbx", "eu-west-gra", True),
        ("ca-east-bhs", "eu-west-gra", False),
        ("eu-west-sbg", "ca-east-bhs", False),
        ("ca-east-bhs", "ca-east-bhs", True),
        ("eu-west-lim", "eu-west-gra", False),
    ],
)
def test_zone_compatible(server: str, block: str, ok: bool) -> None:
    assert zone_compatible(server, block) is ok


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ("ns1", ("ns2", "ns3")),
        ("ns2", ("ns1", "ns3")),
        ("ns3", ("ns1", "ns2")),
        (None, ("ns1", "ns2", "ns3")),
    ],
)
def test_candidate_order(current: str | None, expected: tuple[str, ...]) -> None:
    assert candidates(WEB, current) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.2, "1s"),
        (45, "45s"),
        (552, "9m12s"),
        (600, "10m"),
        (3600, "1h"),
        (3900, "1h5m"),
        (90061, "1d1h1m1s"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_clock_is_utc() -> None:
    assert clock(NOW + 131) == "14:02:11Z"


# --------------------------------------------------------------------------- sequences


def test_move_lifecycle_in_flight_then_cooldown_then_counted() -> None:
    d = decide(state(), obs(down("ns1")), POLICY)
    (planned,) = d.actions
    assert isinstance(planned, StartMove)
    s = move_started(d.state, "web", "m-1", NOW, target=planned.target)
    again = decide(s, obs(down("ns1"), now=NOW + 2), POLICY)
    assert again.actions == ()
    assert again.statuses["web"] is M
    assert again.state.groups["web"].reason == "move m-1 of web to ns2 in flight"

    s = move_finished(
        again.state, "web", trigger="auto", result="success", now=NOW + 40, cooldown=600
    )
    web = s.groups["web"]
    assert (web.moving, web.moving_to, web.cooldown_until, web.last_move_at) == (
        None,
        None,
        NOW + 640,
        NOW + 40,
    )
    assert s.failovers == (NOW + 40,)
    after = decide(s, obs(routing=on("ns2"), now=NOW + 41), POLICY)
    assert after.actions == ()
    assert after.statuses["web"] is F
    assert after.state.groups["web"].reason == "web on standby ns2 (up); failback is manual"


@pytest.mark.parametrize(
    ("trigger", "result", "counted"),
    [
        ("auto", "success", True),
        ("auto", "failed", True),  # a failing automatic move still spends the budget
        ("auto", "partial", True),
        ("manual", "success", False),
        ("failback", "success", False),
    ],
)
def test_move_finished_cooldown_always_and_budget_for_auto(
    trigger: Any, result: Any, counted: bool
) -> None:
    s = move_finished(
        state(moving="m-2"), "web", trigger=trigger, result=result, now=NOW, cooldown=900
    )
    assert s.groups["web"].cooldown_until == NOW + 900
    assert s.groups["web"].moving is None
    assert s.failovers == ((NOW,) if counted else ())


@pytest.mark.parametrize(
    ("trigger", "cooldown_until", "last_move_at", "sentence"),
    [
        # daemon.dry_run: a cooldown as for a real move, so it is said once per cooldown.
        (
            "auto",
            NOW + 900,
            NOW,
            "dry run of web done; nothing moved; web in cooldown until 14:15:00Z",
        ),
        (
            "failback",
            NOW + 900,
            NOW,
            "dry run of web done; nothing moved; web in cooldown until 14:15:00Z",
        ),
        # An operator's rehearsal must not hold back a real failover afterwards.
        ("manual", 0.0, None, "dry run of web done; nothing moved, no cooldown"),
    ],
)
def test_a_dry_run_finished_is_never_counted_and_cools_down_unless_manual(
    trigger: Any, cooldown_until: float, last_move_at: float | None, sentence: str
) -> None:
    s = move_started(state(), "web", "m-1", NOW - 5, target="ns2", trigger=trigger)
    s = move_finished(
        s, "web", trigger=trigger, result="success", now=NOW, cooldown=900, dry_run=True
    )
    web = s.groups["web"]
    assert (web.moving, web.moving_to, web.moving_trigger) == (None, None, None)
    assert (web.cooldown_until, web.last_move_at) == (cooldown_until, last_move_at)
    assert web.reason == sentence
    assert s.failovers == ()


@pytest.mark.parametrize(
    ("cooldown_until", "retry_after", "until", "sentence"),
    [
        (
            0.0,
            60.0,
            NOW + 60,
            "move of web ended with nothing moved: pre hook vetoed it (backup running); "
            "asked again at 14:01:00Z",
        ),
        # A longer cooldown already running is kept, not shortened by the veto.
        (
            NOW + 300,
            60.0,
            NOW + 300,
            "move of web ended with nothing moved: pre hook vetoed it (backup running); "
            "asked again at 14:05:00Z",
        ),
    ],
)
def test_a_vetoed_move_is_asked_again_later_and_not_counted(
    cooldown_until: float, retry_after: float, until: float, sentence: str
) -> None:
    s = move_started(
        state(cooldown_until=cooldown_until), "web", "m-1", NOW, target="ns2", trigger="auto"
    )
    s = move_vetoed(s, "web", now=NOW, retry_after=retry_after, veto="backup running")
    web = s.groups["web"]
    assert (web.moving, web.moving_to, web.moving_trigger) == (None, None, None)
    assert web.cooldown_until == until
    assert web.last_move_at is None
    assert web.reason == sentence
    assert s.failovers == ()
    # Asked again once the retry time is over (the holder still down).
    d = decide(s, obs(down("ns1"), now=until), POLICY)
    assert [type(a) for a in d.actions] == [StartMove]


def test_a_move_that_sent_nothing_leaves_the_core_free_to_choose_again() -> None:
    s = move_started(state(), "web", "m-1", NOW, target="ns2", trigger="auto")
    s = move_abandoned(s, "web", now=NOW, why="nothing reached OVH")
    web = s.groups["web"]
    assert (web.moving, web.cooldown_until, web.reason) == (
        None,
        0.0,
        "move of web ended with nothing moved: nothing reached OVH",
    )
    assert s.failovers == ()
    assert [type(a) for a in decide(s, obs(down("ns1")), POLICY).actions] == [StartMove]
    # A group removed by a reload while its move ran is not brought back.
    gone = EngineState.initial(make_policy(group("db", primary="ns4", blocks=(B3,))))
    assert move_abandoned(gone, "web", now=NOW, why="x", retry_after=60) == gone


def test_flapping_primary_moves_once_per_cooldown() -> None:
    """ns1 fails, blocks go to ns2; ns2 then fails within the cooldown: no move back."""
    s = decide(state(), obs(down("ns1")), POLICY).state
    s = move_started(s, "web", "m-1", NOW, target="ns2")
    s = move_finished(s, "web", trigger="auto", result="success", now=NOW + 30, cooldown=600)
    moves = 0
    for t in range(60, 630, 30):  # ns2 flaps down every other round; ns1 is back up
        flap = down("ns2") if (t // 30) % 2 else up("ns2")
        d = decide(s, obs(flap, routing=on("ns2"), now=NOW + t), POLICY)
        moves += sum(isinstance(a, StartMove) for a in d.actions)
        s = d.state
    assert moves == 0
    d = decide(s, obs(down("ns2"), routing=on("ns2"), now=NOW + 631), POLICY)
    assert d.actions == (move("ns1", "standby ns2 down for 3 checks; moving 2 blocks to ns1"),)


def test_blocked_is_emitted_once_per_change_of_reason() -> None:
    s = state(**IN_COOLDOWN)
    emitted: list[str] = []
    for ob in [
        obs(down("ns1")),
        obs(down("ns1"), now=NOW + 10),  # same reason: silent
        obs(down("ns1"), failing("ns2"), failing("ns3"), now=NOW + 20),  # guard now
        obs(down("ns1"), failing("ns2"), failing("ns3"), now=NOW + 30),
        obs(down("ns1"), now=NOW + 40),  # back to cooldown
        obs(now=NOW + 50),  # holder up again: nothing blocked
        obs(down("ns1"), now=NOW + 60),  # blocked by cooldown again: said again
    ]:
        d = decide(s, ob, POLICY)
        emitted += [a.reason for a in d.actions if isinstance(a, Blocked)]
        s = d.state
    assert emitted == ["cooldown", "guard", "cooldown", "cooldown"]


def test_guards_are_in_the_state_and_the_summary() -> None:
    d = decide(state(), obs(failing("ns4"), failing("ns5"), failing("ns6")), POLICY)
    assert dict(d.state.guards) == {"mass_failure": MASS}
    assert d.reason == f"no action: 1 group (1 nominal); {MASS}"
    cleared = decide(d.state, obs(now=NOW + 2), POLICY)
    assert dict(cleared.state.guards) == {}
    assert cleared.reason == "no action: 1 group (1 nominal)"


def test_summary_names_each_action() -> None:
    d = decide(state(TWO_GROUPS), obs(down("ns1"), routing={**on("ns1"), B3: "ns9"}), TWO_GROUPS)
    assert d.reason == (
        f"web: {DOWN3}; moving 2 blocks to ns2; db: blocks of db routed to ns9, outside the group"
    )


def test_max_failovers_window_slides() -> None:
    s = state()
    for i in range(5):
        s = move_finished(
            s, "other", trigger="auto", result="success", now=NOW + i * 600, cooldown=0
        )
    # five automatic failovers at +0 … +40m; the limit is 5 per hour
    last = NOW + 2400
    frozen = decide(s, obs(down("ns1"), now=last + 60), POLICY)
    assert [type(a) for a in frozen.actions] == [Blocked]
    assert frozen.state.guards["max_failovers"] == (
        "max failovers: 5 automatic failovers in the last 1h (limit 5); "
        "automatic moves frozen until 15:00:00Z"
    )
    still = decide(frozen.state, obs(down("ns1"), now=NOW + 3599), POLICY)
    assert "max_failovers" in still.state.guards
    freed = decide(still.state, obs(down("ns1"), now=NOW + 3600), POLICY)
    assert freed.state.failovers == tuple(NOW + i * 600 for i in range(1, 5))
    assert [type(a) for a in freed.actions] == [StartMove]
    # The move just planned spends the last unit of the budget: frozen again at once.
    assert freed.state.guards["max_failovers"] == (
        "max failovers: 4 automatic failovers in the last 1h and 1 under way (limit 5); "
        "automatic moves frozen"
    )


def _many_groups(n: int) -> Policy:
    servers = [f"p{i}" for i in range(n)] + [f"s{i}" for i in range(n)]
    groups = [GroupPolicy(f"g{i}", f"p{i}", (f"s{i}",), (net(f"10.0.{i}.0/29"),)) for i in range(n)]
    return make_policy(*groups, servers=servers, mass=MassFailure(fraction=0.9, min_servers=3))


def test_max_failovers_counts_the_moves_planned_in_the_same_cycle() -> None:
    pol = _many_groups(8)
    health = {f"p{i}": down(f"p{i}") for i in range(8)} | {f"s{i}": up(f"s{i}") for i in range(8)}
    routing = {f"10.0.{i}.0/29": f"p{i}" for i in range(8)}
    d = decide(EngineState.initial(pol), Observation(NOW, health, routing), pol)
    started = [a.group for a in d.actions if isinstance(a, StartMove)]
    refused = [a for a in d.actions if isinstance(a, Blocked)]
    assert started == ["g0", "g1", "g2", "g3", "g4"]
    budget = (
        "max failovers: 0 automatic failovers in the last 1h and 5 under way (limit 5); "
        "automatic moves frozen"
    )
    assert refused == [
        Blocked(f"g{i}", "guard", f"primary p{i} down for 3 checks, not moving; {budget}")
        for i in (5, 6, 7)
    ]
    assert d.state.guards["max_failovers"] == budget
    assert d.statuses["g7"] is D


def test_max_failovers_counts_automatic_moves_in_flight_only() -> None:
    pol = _many_groups(6)
    health = {f"p{i}": down(f"p{i}") for i in range(6)} | {f"s{i}": up(f"s{i}") for i in range(6)}
    routing = {f"10.0.{i}.0/29": f"p{i}" for i in range(6)}
    s = EngineState.initial(pol)
    for i in range(4):
        s = move_started(s, f"g{i}", f"m-{i}", NOW, target=f"s{i}", trigger="auto")
    s = move_started(s, "g4", "m-4", NOW, target="s4", trigger="manual")
    d = decide(s, Observation(NOW, health, routing), pol)
    assert [a.group for a in d.actions if isinstance(a, StartMove)] == ["g5"]
    assert "under way" in d.state.guards["max_failovers"]


def test_pause_with_expiry_then_resume() -> None:
    s = pause(state(), "web", now=NOW, duration=1800, reason="kernel upgrade")
    web = s.groups["web"]
    assert (web.paused, web.pause_until, web.pause_reason) == (True, NOW + 1800, "kernel upgrade")
    d = decide(s, obs(down("ns1"), now=NOW + 1799), POLICY)
    assert d.actions == (
        Blocked(
            "web", "paused", f"{DOWN3}, not moving; web paused until 14:30:00Z (kernel upgrade)"
        ),
    )
    d = decide(d.state, obs(down("ns1"), now=NOW + 1800), POLICY)
    assert d.state.groups["web"].paused is False
    assert [type(a) for a in d.actions] == [StartMove]

    s = resume(pause(state(), "web", now=NOW, duration=None, reason=None), "web")
    assert s.groups["web"] == GroupState()


def test_apply_policy_keeps_remaining_groups_adds_and_drops() -> None:
    s = replace(
        state(TWO_GROUPS, cooldown_until=NOW + 60, paused=True),
        failovers=(NOW,),
    )
    reloaded = make_policy(group(), group("mail", primary="ns5", standbys=("ns6",), blocks=(B3,)))
    s2 = apply_policy(s, reloaded)
    assert list(s2.groups) == ["web", "mail"]
    assert s2.groups["web"] == s.groups["web"]
    assert s2.groups["mail"] == GroupState()
    assert s2.failovers == (NOW,)


def test_initial_state_has_one_group_state_per_group() -> None:
    assert dict(EngineState.initial(TWO_GROUPS).groups) == {"web": GroupState(), "db": GroupState()}


# --------------------------------------------------------------------------- partial failover


RetryRow = tuple[str, Observation, str | None, tuple[str, ...], tuple[str, ...], Action]

RETRY_ROWS: list[RetryRow] = [
    (
        "next candidate for the blocks left",
        obs(down("ns1"), routing={B1: "ns2", B2: "ns1"}),
        "ns1",
        (B2,),
        ("ns2",),
        move(
            "ns3",
            "ns2 did not take 198.51.100.7/32; moving 1 block to ns3",
            blocks=(B2,),
        ),
    ),
    (
        "eligibility is checked for the blocks left only",
        obs(down("ns1"), eligibility={("ns3", B1): no("not allowed")}),
        "ns1",
        (B2,),
        ("ns2",),
        move("ns3", "ns2 did not take 198.51.100.7/32; moving 1 block to ns3", blocks=(B2,)),
    ),
    (
        "from a standby the primary comes first, tried targets are skipped",
        obs(down("ns2"), routing=on("ns2")),
        "ns2",
        BOTH,
        ("ns1",),
        move(
            "ns3",
            "ns1 did not take 203.0.113.8/29 and 198.51.100.7/32; moving 2 blocks to ns3",
        ),
    ),
    (
        "nobody left",
        obs(down("ns1"), unknown("ns3")),
        "ns1",
        (B1,),
        ("ns2",),
        Blocked(
            "web",
            "no_eligible_target",
            "ns2 did not take 203.0.113.8/29; no other eligible standby for web: "
            "ns3 health unknown",
        ),
    ),
]


@pytest.mark.parametrize(
    ("ob", "source", "blocks", "tried", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in RETRY_ROWS],
)
def test_plan_retry(
    ob: Observation,
    source: str | None,
    blocks: tuple[str, ...],
    tried: tuple[str, ...],
    expected: Action,
) -> None:
    planned = plan_retry(
        state(moving="m-1", moving_to=tried[0]),
        ob,
        POLICY,
        "web",
        source=source,
        blocks=blocks,
        tried=tried,
        trigger="auto",
    )
    assert planned == expected


def test_eligible_standbys_use_zone_vps_and_verdicts_but_not_health() -> None:
    g = group(standbys=("ns2", "ns3", "vps-1", "ns5"))
    ob = obs(
        down("ns5"),
        services={"ns3": svc("ns3", "ca-east-bhs"), "vps-1": svc("vps-1", "eu-west-gra", "vps")},
        block_regions=GRA,
        eligibility={("ns2", B2): Eligibility(True, "eligible")},
    )
    assert eligible_standbys(ob, g) == {"ns2": True, "ns3": False, "vps-1": False, "ns5": True}
    assert cannot_take("vps-1", g.blocks, ob) == "cannot take 203.0.113.8/29 (/29 to a VPS)"
