"""README.md: every command it shows exists, every file it names is shipped.

The shell blocks are lexed like a shell would (quotes, continuations, pipes, `&&`); each
`make X` must be a Makefile target and each `failoverd ...` must parse with the real CLI
parser. The YAML policy and the access rules are checked against the code that uses them.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from failoverd.cli import build_parser
from failoverd.cli import main as cli_main
from failoverd.config import parse_policy
from tests.fixtures.daemon import (
    BLOCK,
    PRIMARY,
    SIM_ENV,
    STANDBY,
    Daemon,
    World,
    http,
    in_thread,
)

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SEPARATORS = set("|&;\n")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^ *```{lang}\n(.*?)^ *```", README.read_text(), re.S | re.M)


def strip_comments(text: str) -> str:
    """Remove `# ...` up to the end of the line, outside quotes, as a shell does."""
    out: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1].isspace()):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def commands(block: str) -> list[list[str]]:
    """Simple commands of a shell block: argv lists, split on newlines, |, &&, ;."""
    text = strip_comments(block).replace("\\\n", " ")
    lexer = shlex.shlex(text, posix=True, punctuation_chars="|&;\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    out: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= SEPARATORS:
            out.append([])
        else:
            out[-1].append(token)
    return [argv for argv in map(strip_prefixes, out) if argv]


def strip_prefixes(argv: list[str]) -> list[str]:
    """Drop `sudo`, `env` and VAR=value prefixes: what remains is the program and its args."""
    while argv and (argv[0] in ("sudo", "env") or re.fullmatch(r"[A-Z_]+=\S*", argv[0])):
        argv = argv[1:]
    return argv


def all_commands() -> list[list[str]]:
    return [argv for block in blocks("sh") for argv in commands(block)]


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:", text, re.M))


# ---------------------------------------------------------------------- the lexer itself


def test_lexer_splits_like_a_shell() -> None:
    block = (
        "make demo    # comment with 'quote\n"
        "FOO=1 sudo failoverd status --url http://x:1 | grep '^a b' && make test\n"
        "curl -d '{\"a\":\n 1}' \\\n  -H x\n"
    )
    assert commands(block) == [
        ["make", "demo"],
        ["failoverd", "status", "--url", "http://x:1"],
        ["grep", "^a b"],
        ["make", "test"],
        ["curl", "-d", '{"a":\n 1}', "-H", "x"],
    ]


# ---------------------------------------------------------------------- the quick start


def test_quick_start_is_the_two_commands_at_the_top() -> None:
    first = blocks("sh")[0]
    assert commands(first) == [["make", "demo"], ["make", "test"]]
    text = README.read_text()
    assert text.index("```sh") < text.index("\n## ")


def test_every_make_target_exists() -> None:
    targets = make_targets()
    used = {arg for argv in all_commands() if argv[0] == "make" for arg in argv[1:]}
    assert {"demo", "test"} <= used
    assert used <= targets, f"not in the Makefile: {sorted(used - targets)}"


def test_every_failoverd_command_parses() -> None:
    parser = build_parser()
    seen: set[str] = set()
    for argv in all_commands():
        if Path(argv[0]).name != "failoverd":
            continue
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"README command does not parse: {shlex.join(argv)}")
        seen.add(args.command)
        inventory = getattr(args, "inventory", None)
        if inventory is not None:
            assert (ROOT / inventory).is_file(), f"{shlex.join(argv)}: no {inventory}"
    # The operations section covers the whole operator CLI.
    assert {
        "check-config",
        "status",
        "history",
        "move",
        "pause",
        "resume",
        "fake-api",
    } <= seen, seen


def test_checker_catches_a_wrong_flag() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["move", "web", "--target", "ns1"])


def test_repository_files_named_in_commands_exist() -> None:
    for argv in all_commands():
        if argv[0] in ("promtool", "install"):
            for arg in argv[1:]:
                if re.fullmatch(r"(config|systemd|scripts)/[\w./-]+", arg):
                    assert (ROOT / arg).is_file(), f"{shlex.join(argv)}: no {arg}"


def test_repository_files_named_in_prose_exist() -> None:
    named = set(
        re.findall(r"`((?:config|systemd|scripts|failoverd)/[\w./-]+)`", README.read_text())
    )
    named |= {"Dockerfile"} if "`Dockerfile`" in README.read_text() else set()
    assert len(named) >= 8
    for path in named:
        assert (ROOT / path).exists(), path


# ---------------------------------------------------------------------- the deployment guide


def test_policy_snippet_is_a_valid_policy() -> None:
    (snippet,) = blocks("yaml")
    policy = parse_policy(snippet, "README.md")
    unit = (ROOT / "systemd" / "failoverd.service").read_text()
    # The credential path the policy names is the one the unit provides.
    credential = re.search(r"^LoadCredential=(\S+?):", unit, re.M)
    assert credential is not None
    assert policy.api.config_file == Path(
        f"/run/credentials/failoverd.service/{credential.group(1)}"
    )
    assert policy.daemon.dry_run is True  # the guide starts in dry run on purpose


def test_ovh_conf_snippet_has_the_three_keys() -> None:
    (ini,) = blocks("ini")
    conf = configparser.ConfigParser()
    conf.read_string(ini)
    endpoint = conf["default"]["endpoint"]
    assert set(conf[endpoint]) == {"application_key", "application_secret", "consumer_key"}


def access_rules() -> set[tuple[str, str]]:
    for argv in all_commands():
        if argv[0] == "curl" and "/auth/credential" in " ".join(argv):
            body = json.loads(argv[argv.index("-d") + 1])
            return {(rule["method"], rule["path"]) for rule in body["accessRules"]}
    raise AssertionError("no /auth/credential request in the README")


def test_access_rules_are_minimal_and_cover_every_route_the_adapter_calls() -> None:
    rules = access_rules()
    assert {method for method, _ in rules} == {"GET", "POST"}
    assert {path for method, path in rules if method == "POST"} == {
        "/ip/*/move",
        "/dedicated/server/*/ipMove",
    }
    source = (ROOT / "failoverd" / "ovhapi.py").read_text()
    templates = {
        t
        for t in re.findall(r'"(/(?:ip|dedicated|vps)[^"]*)"', source)
        if set(re.findall(r"\{(\w+)\}", t)) <= {"ip", "serviceName", "taskId"} and "(" not in t
    }
    assert len(templates) >= 8, templates
    paths = {path for _, path in rules}
    for template in templates:
        assert re.sub(r"\{\w+\}", "*", template) in paths, template


def test_every_alert_is_explained() -> None:
    doc = yaml.safe_load((ROOT / "config" / "prometheus" / "alerts.yml").read_text())
    text = README.read_text()
    for group in doc["groups"]:
        for rule in group["rules"]:
            assert f"`{rule['alert']}`" in text, rule["alert"]


# ---------------------------------------------------------------------- the operations


def operations_commands() -> list[list[str]]:
    """The commands of the README's "Operations" section, as written."""
    text = README.read_text()
    section = text[text.index("\n## Operations\n") : text.index("\n### What each alert means")]
    found = re.findall(r"^ *```sh\n(.*?)^ *```", section, re.S | re.M)
    return [argv for block in found for argv in commands(block)]


# Every operations command, in an order where each one does its job on the test world
# (group web: 203.0.113.8/29 on ns1001, standby ns1002; no cooldown, so the failback and
# the forced move right after it are not refused). What each must print is checked below.
OPERATIONS_RUN = [
    "failoverd status",
    "failoverd status --json",
    "failoverd history web --limit 20",
    "curl -s http://127.0.0.1:9877/metrics",
    "grep ^failoverd_group_state",
    'failoverd pause web --for 2h --reason "kernel upgrade on ns1001"',
    "failoverd resume web",
    "failoverd move web --dry-run",
    "failoverd move web --to ns1002.ip-51-68-100.eu",
    "failoverd move web --to ns1001.ip-51-68-100.eu",
    "failoverd move web --to ns1002.ip-51-68-100.eu --force",
    "failoverd fake-api --inventory config/sim/example.yaml --listen 127.0.0.1:8999",
]


def test_every_operations_command_is_run_by_the_test_below() -> None:
    shown = sorted(shlex.join(argv) for argv in operations_commands())
    run = sorted(shlex.join(shlex.split(line)) for line in OPERATIONS_RUN)
    assert shown == run, "README operations and OPERATIONS_RUN differ"


@pytest.mark.slow
async def test_operations_commands_against_a_real_daemon(
    world: World,
    start_daemon: Callable[..., Daemon],
    capsys: pytest.CaptureFixture[str],
) -> None:
    world.write_policy(cooldown="0s")
    d = start_daemon(world.policy, env=SIM_ENV)
    await in_thread(d.wait_ready, world.url)
    await in_thread(
        d.wait_log, lambda r: r.get("event") == "server up" and r.get("server") == STANDBY
    )
    capsys.readouterr()
    metrics_text = ""
    for line in OPERATIONS_RUN:
        argv = shlex.split(line)
        if argv[0] == "curl":  # the daemon of the test listens on its own port
            _, _, body = await in_thread(http, "GET", world.url + "/metrics")
            metrics_text = body.decode()
            continue
        if argv[0] == "grep":
            assert any(re.match(argv[1], x) for x in metrics_text.splitlines()), line
            continue
        if argv[1] == "fake-api":
            continue  # run as written (another port) by tests/test_sim_cli.py
        rc = await in_thread(cli_main, [*argv[1:], "-c", str(world.policy)])
        out, err = capsys.readouterr()
        assert rc == 0, f"{line}: exit {rc}: {err}"
        assert err == "", f"{line}: {err}"
        assert out.strip(), line
        if argv[1:] == ["status"]:
            assert re.search(rf"^web +nominal +{re.escape(PRIMARY)} ", out, re.M), out
        elif argv[1:] == ["status", "--json"]:
            assert json.loads(out)["groups"][0]["holder"] == PRIMARY
        elif argv[1] == "move":
            target = argv[argv.index("--to") + 1] if "--to" in argv else STANDBY
            last = out.splitlines()[-1]
            assert last.endswith(": dry_run" if "--dry-run" in argv else ": success"), out
            if "--dry-run" not in argv:
                assert world.sim.state.routing(BLOCK) == target
    assert world.sim.state.routing(BLOCK) == STANDBY
    assert await in_thread(d.stop) == 0
