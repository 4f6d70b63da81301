"""Secrets never leave the daemon: logs (at debug), /status, /metrics, /history, errors.

A real `failoverd run` against the simulator with credentials in OVH_* variables and the
admin token in a file; every byte it prints or serves is grepped for them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from failoverd.cli import main as cli_main
from tests.fixtures.daemon import SIM_ENV, TOKEN, Daemon, World, http, in_thread, make_world

pytestmark = pytest.mark.slow


def fetch_everything(url: str) -> list[bytes]:
    bodies = []
    for path in ["/status", "/metrics", "/history?limit=1000", "/healthz", "/nope"]:
        bodies.append(http("GET", url + path)[2])
    for auth in [None, "Bearer wrong", f"Bearer {TOKEN}"]:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        for path in ["/groups/web/pause", "/groups/web/resume", "/groups/web/move"]:
            body = b'{"dry_run": true}' if path.endswith("move") else b"{}"
            bodies.append(http("POST", url + path, body, headers)[2])
    return bodies


def assert_clean(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"secret {secret[:4]}… leaked in: {text[:300]}"


async def run_and_grep(
    world: World,
    start_daemon: Callable[..., Daemon],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
) -> Daemon:
    world.write_policy(log_level="debug")
    d = start_daemon(world.policy, env=env)
    await in_thread(d.wait_ready, world.url)
    # The API has been used (successfully or not) before anything is grepped.
    await in_thread(
        d.wait_log, lambda r: r.get("event") in ("standby eligible", "routing read failed")
    )
    bodies = await in_thread(fetch_everything, world.url)
    # The CLI's own error output with a wrong token.
    monkeypatch.setenv("FAILOVERD_TOKEN", "wrong-token-from-the-cli")
    assert await in_thread(cli_main, ["resume", "web", "--url", world.url]) == 1
    assert await in_thread(cli_main, ["status", "--url", world.url]) == 0
    captured = capsys.readouterr()
    # A broken reload prints problems; a secret in the file must not be echoed either.
    world.policy.write_text(
        world.policy.read_text() + f"application_secret: {env.get('OVH_APPLICATION_SECRET', 'x')}\n"
    )
    d.signal(signal.SIGHUP)
    await in_thread(d.wait_event, "policy reload refused; the previous policy keeps running")
    assert await in_thread(d.stop) == 0
    texts = [b.decode(errors="replace") for b in bodies]
    texts += [d.output(), captured.out, captured.err]
    secrets = [TOKEN, *[v for k, v in env.items() if k != "OVH_APPLICATION_KEY"]]
    assert_clean(texts, [*secrets, "wrong-token-from-the-cli"])
    return d


async def test_secrets_never_printed_or_served(
    tmp_path: Path,
    http_server_factory: Any,
    start_daemon: Callable[..., Daemon],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = await make_world(tmp_path, http_server_factory)
    try:
        d = await run_and_grep(world, start_daemon, capsys, monkeypatch, dict(SIM_ENV))
        assert any(r.get("level") == "debug" for r in d.records())  # debug really was on
    finally:
        await world.sim.close()


async def test_wrong_credentials_are_reported_without_the_secret(
    tmp_path: Path,
    http_server_factory: Any,
    start_daemon: Callable[..., Daemon],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = await make_world(tmp_path, http_server_factory)
    env = dict(
        SIM_ENV, OVH_APPLICATION_SECRET="wrong-secret-value-7c1d", OVH_CONSUMER_KEY="wrong-ck-3e9a"
    )
    try:
        d = await run_and_grep(world, start_daemon, capsys, monkeypatch, env)
        # The failure itself is visible in the log, just not the values.
        assert any(r.get("level") in ("warning", "error") for r in d.records())
    finally:
        await world.sim.close()
