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
    candidates,
    clock,
    decide,
    holder,
    human_duration,
    plan_manual_move,
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
    mass: MassFailure = MassFailure(),
    max_failovers: MaxFailovers = MaxFailovers(),
) -> Policy:
    caps = capacity or {}
    return Policy(
        api=ApiPolicy(),
        daemon=DaemonPolicy(dry_run=dry_run),
        guards=GuardsPolicy(mass_failure=mass, max_failovers=max_failovers),
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


def on(server: str, *blocks: str) -> dict[str, str | None]:
    return {b: server for b in (blocks or BOTH)}


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
IN_COOLDOWN = {"cooldown_until": NOW + 552, "last_move_at": NOW - 48}
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
