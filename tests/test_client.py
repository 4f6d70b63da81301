"""The CLI client against the real HTTP API on loopback (over the in-test Engine)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from failoverd import client
from failoverd.cli import build_parser
from failoverd.cli import main as cli_main
from failoverd.errors import FailoverdError, MoveRefused
from tests.fixtures.daemon import TOKEN, LiveApi, free_port, in_thread


def run_client(argv: list[str]) -> str:
    out = io.StringIO()
    rc = client.main(build_parser().parse_args(argv), out=out, poll=0.01)
    assert rc == 0
    return out.getvalue()


@pytest.fixture(autouse=True)
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAILOVERD_TOKEN", TOKEN)


async def test_status_table(web_api: LiveApi) -> None:
    text = await in_thread(run_client, ["status", "--url", web_api.url])
    lines = text.splitlines()
    assert lines[0].startswith("failoverd status at 2023-11-14 22:13:20")
    header = next(i for i, line in enumerate(lines) if line.startswith("GROUP"))
    assert lines[header].split() == ["GROUP", "STATE", "HOLDER", "COOLDOWN", "PAUSED", "REASON"]
    assert lines[header + 1].split()[:5] == ["web", "nominal", "ns1001.ip-51-68-100.eu", "-", "no"]
    assert lines[header + 2].split()[:5] == [
        "db",
        "failed_over",
        "ns1001.ip-51-68-100.eu",
        "7m",
        "no",
    ]
    assert any(line.split()[:2] == ["ns1002.ip-51-68-100.eu", "down"] for line in lines)
    assert any(line.split()[:3] == ["ns5000.ip-142-44-200.net", "unknown", "-"] for line in lines)
    assert any(line.split()[:2] == ["max_failovers", "off"] for line in lines)


async def test_status_shows_failing_rounds_before_the_verdict(web_api: LiveApi) -> None:
    snap = web_api.engine.snap
    up = replace(snap.servers[0], failing=True, last_reason="connection refused")
    web_api.engine.snap = replace(snap, servers=(up, *snap.servers[1:]))
    lines = (await in_thread(run_client, ["status", "--url", web_api.url])).splitlines()
    row = next(line for line in lines if line.startswith("ns1001.ip-51-68-100.eu "))
    assert row.split()[1:3] == ["up", "(failing)"]
    row = next(line for line in lines if line.startswith("ns1002.ip-51-68-100.eu "))
    assert row.split()[1] == "down"
    assert "(failing)" not in row  # down says it all


async def test_status_json_is_the_api_answer(web_api: LiveApi) -> None:
    text = await in_thread(run_client, ["status", "--url", web_api.url, "--json"])
    data = json.loads(text)
    assert [g["name"] for g in data["groups"]] == ["web", "db"]


async def test_move_follows_progress_until_verified(web_api: LiveApi) -> None:
    text = await in_thread(
        run_client, ["move", "web", "--to", "ns1002.ip-51-68-100.eu", "--url", web_api.url]
    )
    lines = text.splitlines()
    assert lines[0] == (
        "move m1 accepted: web → ns1002.ip-51-68-100.eu (203.0.113.8/29, 198.51.100.7/32)"
    )
    assert [line.strip() for line in lines if "phase:" in line] == [
        "phase: planned",
        "phase: submitted",
        "phase: task_done",
    ]
    assert lines[-1] == "move m1: success"
    assert web_api.engine.calls[0] == (
        "move",
        {"group": "web", "to": "ns1002.ip-51-68-100.eu", "force": False, "dry_run": False},
    )


async def test_move_json(web_api: LiveApi) -> None:
    text = await in_thread(run_client, ["move", "web", "--force", "--json", "--url", web_api.url])
    data = json.loads(text)
    assert data["result"] == "success"
    assert data["accepted"]["move_id"] == "m1"
    assert data["entries"][-1]["details"] == {"result": "success"}


async def test_failed_move_exits_1_with_the_reason(
    web_api: LiveApi, capsys: pytest.CaptureFixture[str]
) -> None:
    web_api.engine.outcome = "failed"
    rc = await in_thread(cli_main, ["move", "web", "--url", web_api.url])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "failoverd: move m1 of web failed: move m1 finished: failed"
    ]


async def test_refused_move(web_api: LiveApi, capsys: pytest.CaptureFixture[str]) -> None:
    web_api.engine.refuse = MoveRefused("group web is in cooldown for 7m; use --force", status=409)
    rc = await in_thread(cli_main, ["move", "web", "--url", web_api.url])
    assert rc == 1
    assert capsys.readouterr().err == (
        "failoverd: move of web refused: group web is in cooldown for 7m; use --force\n"
    )


async def test_dry_run_move(web_api: LiveApi) -> None:
    text = await in_thread(run_client, ["move", "web", "--dry-run", "--url", web_api.url])
    assert text.splitlines()[0].startswith("dry run of move m1 accepted: web →")
    assert text.splitlines()[-1] == "move m1: success"


async def test_pause_resume_history(web_api: LiveApi) -> None:
    text = await in_thread(
        run_client, ["pause", "db", "--for", "2h", "--reason", "disk swap", "--url", web_api.url]
    )
    assert text == "group db paused until 2023-11-15 00:13:20 UTC (disk swap)\n"
    text = await in_thread(run_client, ["pause", "web", "--url", web_api.url])
    assert text == "group web paused until resumed\n"
    assert (
        await in_thread(run_client, ["resume", "web", "--url", web_api.url])
        == "group web resumed\n"
    )
    assert await in_thread(run_client, ["history", "--url", web_api.url]) == "no history yet\n"
    assert (
        await in_thread(run_client, ["history", "db", "--url", web_api.url])
        == "no history for group 'db'\n"
    )
    await in_thread(run_client, ["move", "web", "--url", web_api.url])
    text = await in_thread(run_client, ["history", "web", "--limit", "5", "--url", web_api.url])
    rows = text.splitlines()
    assert rows[0].split() == ["TIME", "(UTC)", "GROUP", "KIND", "MOVE", "MESSAGE"]
    assert rows[1].split()[2:] == ["web", "decision", "m1", "manual", "move", "of", "web"]
    assert web_api.engine.calls[-1] == ("history", {"group": "web", "limit": 5})
    data = json.loads(await in_thread(run_client, ["history", "--json", "--url", web_api.url]))
    assert [e["kind"] for e in data] == ["decision", "move"]


async def test_errors_are_one_line(web_api: LiveApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert await in_thread(cli_main, ["pause", "nope", "--url", web_api.url]) == 1
    assert capsys.readouterr().err == "failoverd: no group 'nope' in the policy\n"


def test_daemon_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert cli_main(["status", "--url", f"http://127.0.0.1:{port}"]) == 1
    assert capsys.readouterr().err == (
        f"failoverd: cannot reach failoverd at http://127.0.0.1:{port}: connection refused"
        " — is it running?\n"
    )


async def test_wrong_or_missing_token(
    web_api: LiveApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAILOVERD_TOKEN", "not-the-token")
    assert await in_thread(cli_main, ["resume", "web", "--url", web_api.url]) == 1
    err = capsys.readouterr().err
    assert err == (
        "failoverd: the daemon refused the admin token (invalid token): check "
        "daemon.admin_token_file / FAILOVERD_TOKEN\n"
    )
    assert "not-the-token" not in err
    monkeypatch.delenv("FAILOVERD_TOKEN")
    assert await in_thread(cli_main, ["resume", "web", "--url", web_api.url]) == 1
    assert capsys.readouterr().err.startswith(
        "failoverd: no admin token: set daemon.admin_token_file"
    )
    assert web_api.engine.calls == []


POLICY = """\
api: {{endpoint: ovh-eu}}
daemon:
  listen: 127.0.0.1:{port}
  state_dir: {state}
  admin_token_file: {token}
servers:
  a.example: {{check: {{tcp: "127.0.0.1:1"}}}}
  b.example: {{check: {{tcp: "127.0.0.1:1"}}}}
groups:
  web: {{primary: a.example, standbys: [b.example], blocks: [203.0.113.8/29]}}
"""


async def test_url_and_token_come_from_the_policy(
    web_api: LiveApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAILOVERD_TOKEN")
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    policy = tmp_path / "failoverd.yaml"
    port = web_api.url.rsplit(":", 1)[1]
    policy.write_text(POLICY.format(port=port, state=tmp_path / "state", token=token_file))
    text = await in_thread(run_client, ["resume", "web", "-c", str(policy)])
    assert text == "group web resumed\n"


def test_missing_policy_without_url_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["status", "-c", str(tmp_path / "nope.yaml")]) == 78
    assert "cannot read the policy" in capsys.readouterr().err


def test_connect_url_maps_wildcards_to_loopback() -> None:
    from failoverd.policy import DaemonPolicy

    assert (
        client.connect_url(DaemonPolicy(listen_host="0.0.0.0", listen_port=1))
        == "http://127.0.0.1:1"
    )
    assert client.connect_url(DaemonPolicy(listen_host="::", listen_port=2)) == "http://[::1]:2"
    assert client.connect_url(DaemonPolicy(listen_host="::1", listen_port=3)) == "http://[::1]:3"


def test_bad_url() -> None:
    with pytest.raises(FailoverdError, match="invalid daemon URL 'ftp://x'"):
        client.DaemonClient("ftp://x").get("/status")


async def test_status_lists_moves_in_flight(web_api: LiveApi) -> None:
    await web_api.engine.request_move("web", to=None, force=False, dry_run=False)
    text = await in_thread(run_client, ["status", "--url", web_api.url])
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("MOVE"))
    assert lines[header].split() == ["MOVE", "GROUP", "TARGET", "PHASE", "BLOCKS", "STARTED"]
    assert lines[header + 1].split()[:5] == [
        "m1",
        "web",
        "ns1002.ip-51-68-100.eu",
        "planned",
        "203.0.113.8/29",
    ]


async def test_output_to_a_closed_pipe_is_not_a_traceback(web_api: LiveApi) -> None:
    # `failoverd status | head -4`: the reader leaves before failoverd has written all.
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "failoverd",
            "status",
            "--url",
            web_api.url,
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 1
    assert err.decode() == ""
