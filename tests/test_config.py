"""config.py: what a valid policy becomes, and the problems that need more than a file."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from failoverd.cli import main
from failoverd.config import format_duration, load_policy, parse_duration, parse_policy
from failoverd.errors import ConfigError
from failoverd.policy import (
    CheckTiming,
    ExecCheck,
    FailbackPolicy,
    HttpCheck,
    IcmpCheck,
    TcpCheck,
)

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "config" / "failoverd.example.yaml"

MINIMAL = """\
servers:
  ns1:
    check: {tcp: "10.0.0.1:22"}
  ns2:
    check: {tcp: "10.0.0.2:22"}
groups:
  web:
    primary: ns1
    standbys: [ns2]
    blocks: [203.0.113.8/29]
"""


def problems(text: str | bytes) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_policy(text, "p.yaml")
    return [str(p) for p in info.value.problems]


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        (" 2 s ", 2.0),
        ("30", 30.0),
        (30, 30.0),
        (0.25, 0.25),
        ("0", 0.0),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10x", "unknown unit 'x' in '10x'; use ms, s, m, h or d"),
        ("-5s", "a duration cannot be negative"),
        (
            "",
            "an empty string is not a duration; use a number with a unit, e.g. 500ms, 2s, 10m, 1h",
        ),
        ("ten", "'ten' is not a duration; use a number with a unit, e.g. 500ms, 2s, 10m, 1h"),
        (
            "5 10",
            "'5 10' has a number without a unit; use a number with a unit, e.g. 500ms, 2s, 10m, 1h",
        ),
        ("nan", "a duration must be a finite number of seconds"),
        (True, "expected a duration such as 2s or 10m, got a boolean"),
    ],
)
def test_parse_duration_refuses_with_plain_words(text: str | bool, message: str) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        parse_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (2, "2s"), (600, "10m"), (5400, "1h30m"), (1.5, "1.5s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


# --------------------------------------------------------------------------- valid policies


def test_the_example_policy_loads_and_uses_every_section() -> None:
    policy = load_policy(EXAMPLE)
    assert policy.source == EXAMPLE
    assert policy.api.endpoint == "ovh-eu"
    assert policy.api.config_file == Path("/etc/failoverd/ovh.conf")
    assert policy.daemon.listen == "127.0.0.1:9877"
    assert policy.daemon.reconcile_interval == 300
    assert policy.daemon.preflight_interval == 900
    assert policy.guards.canaries[0] == TcpCheck("192.0.2.53", 53)
    assert set(policy.servers) == {
        "ns1001.ip-51-68-100.eu",
        "ns1002.ip-51-68-100.eu",
        "vps-1a2b3c4d.vps.ovh.net",
        "ns5000.ip-142-44-200.net",
    }
    http = policy.servers["ns1001.ip-51-68-100.eu"].checks[0]
    assert isinstance(http, HttpCheck)
    assert http.expect_status == (200,)
    assert http.headers == (("Host", "www.example.com"),)
    assert http.timing == CheckTiming(interval=1.0, timeout=0.5, fall=3, rise=5)
    ns1002 = policy.servers["ns1002.ip-51-68-100.eu"]
    assert ns1002.capacity == 1
    assert ns1002.checks[1] == IcmpCheck("51.68.100.11", CheckTiming(2.0, 1.0, 5, 5))
    web = policy.groups["web"]
    assert web.blocks == (ipaddress.ip_network("203.0.113.8/29"),)
    assert web.cooldown == 900
    assert web.failback == FailbackPolicy("auto", 600)
    assert web.hooks.pre == ("/usr/local/bin/ok-to-failover",)
    mail = policy.groups["mail"]
    assert mail.cooldown == 600  # defaults.cooldown
    assert mail.failback == FailbackPolicy("manual", 600)
    assert mail.members == (
        "ns1001.ip-51-68-100.eu",
        "vps-1a2b3c4d.vps.ovh.net",
        "ns1002.ip-51-68-100.eu",
    )


def test_the_example_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out == f"ok: 2 groups, 4 servers, 2 blocks ({EXAMPLE})\n"
    assert err == ""


def test_minimal_policy_gets_every_default() -> None:
    policy = parse_policy(MINIMAL, "p.yaml")
    assert policy.api.endpoint == "ovh-eu"
    assert policy.api.requests_per_minute == 60
    assert policy.daemon.state_dir == Path("/var/lib/failoverd")
    assert policy.daemon.admin_token_file is None
    assert policy.guards.canaries == ()
    assert policy.servers["ns1"].checks == (TcpCheck("10.0.0.1", 22, CheckTiming()),)
    assert policy.groups["web"].cooldown == 600
    assert policy.source is None


def test_defaults_are_applied_and_overridden_per_key() -> None:
    text = (
        "defaults:\n  check: {interval: 10s, fall: 2}\n  cooldown: 1m\n  failback: auto\n" + MINIMAL
    )
    text = text.replace('check: {tcp: "10.0.0.2:22"}', 'check: {tcp: "10.0.0.2:22", timeout: 3s}')
    policy = parse_policy(text, "p.yaml")
    assert policy.servers["ns1"].checks[0].timing == CheckTiming(10.0, 1.0, 2, 5)
    assert policy.servers["ns2"].checks[0].timing == CheckTiming(10.0, 3.0, 2, 5)
    assert policy.groups["web"].cooldown == 60
    assert policy.groups["web"].failback == FailbackPolicy("auto", 600)


def test_anchors_aliases_merge_keys_and_x_keys() -> None:
    text = """\
x-check: &slow {interval: 30s, timeout: 5s}
servers:
  ns1:
    check: {<<: *slow, exec: [/bin/true], fall: 1}
  ns2:
    check: {<<: *slow, icmp: 10.0.0.2, timeout: 2s}
groups:
  web: &group
    primary: ns1
    standbys: [ns2]
    blocks: [203.0.113.8/29]
"""
    policy = parse_policy(text, "p.yaml")
    assert policy.servers["ns1"].checks == (ExecCheck(("/bin/true",), CheckTiming(30, 5, 1, 5)),)
    assert policy.servers["ns2"].checks == (IcmpCheck("10.0.0.2", CheckTiming(30, 2, 3, 5)),)


def test_numbers_blocks_and_ipv6() -> None:
    text = (
        MINIMAL.replace("[203.0.113.8/29]", "[198.51.100.7, '2001:db8::/64']")
        .replace("  ns1:", "  1001:")
        .replace("primary: ns1", "primary: 1001")
    )
    policy = parse_policy(text, "p.yaml")
    assert policy.groups["web"].primary == "1001"
    assert policy.groups["web"].blocks == (
        ipaddress.ip_network("198.51.100.7/32"),
        ipaddress.ip_network("2001:db8::/64"),
    )


def test_listen_forms() -> None:
    for listen, host, port in (
        ("0.0.0.0:80", "0.0.0.0", 80),
        ("'[::1]:9877'", "::1", 9877),
        ("localhost:0", "localhost", 0),
    ):
        policy = parse_policy(f"daemon:\n  listen: {listen}\n" + MINIMAL, "p.yaml")
        assert (policy.daemon.listen_host, policy.daemon.listen_port) == (host, port)


def test_base_url_endpoint_is_accepted() -> None:
    text = "api:\n  endpoint: http://127.0.0.1:8999/1.0\n" + MINIMAL
    assert parse_policy(text, "p.yaml").api.endpoint == "http://127.0.0.1:8999/1.0"


# --------------------------------------------------------------------------- problems


def test_problems_are_sorted_by_line_and_all_reported() -> None:
    text = MINIMAL.replace("primary: ns1", "primary: nsX") + "    cooldown: fast\n"
    text = "daemon:\n  log_level: loud\n" + text
    assert problems(text) == [
        "p.yaml:2: daemon.log_level: must be one of debug, info, warning, error, got 'loud'",
        "p.yaml:10: groups.web.primary: server 'nsX' is not defined in servers",
        "p.yaml:13: groups.web.cooldown: 'fast' is not a duration; use a number with a unit, "
        "e.g. 500ms, 2s, 10m, 1h",
    ]


def test_non_utf8_bytes_are_located() -> None:
    data = MINIMAL.encode().replace(b"ns2]", b"ns\xe92]")
    assert problems(data) == [
        "p.yaml:9: the file is not valid UTF-8 (byte 0xe9 at column 18); save it as UTF-8"
    ]


def test_utf16_file_is_not_utf8() -> None:
    assert problems(MINIMAL.encode("utf-16"))[0].startswith("p.yaml:1: the file is not valid UTF-8")


def test_control_character_is_located() -> None:
    text = MINIMAL.replace("ns2]", "ns2\x07]")
    assert problems(text) == ["p.yaml:9: character '\\x07' is not allowed in a YAML file"]


def test_several_documents() -> None:
    assert problems(MINIMAL + "---\nmore: 1\n") == [
        "p.yaml:11: YAML syntax error: expected a single document in the stream "
        "but found another document"
    ]


def test_recursive_alias_does_not_hang() -> None:
    text = MINIMAL.replace("standbys: [ns2]", "standbys: &s [ns2, *s]")
    assert problems(text) == [
        "p.yaml:9: groups.web.standbys[1]: expected a server name, got a list"
    ]


def test_self_merging_mapping_does_not_hang() -> None:
    text = "x-a: &a {<<: *a}\n" + MINIMAL
    # The anchor exists while its own mapping is composed: the merge points at itself.
    assert parse_policy(text, "p.yaml").groups["web"].primary == "ns1"


def test_python_tags_are_refused() -> None:
    text = MINIMAL.replace("primary: ns1", "primary: !!python/object:os.system ns1")
    assert problems(text) == [
        "p.yaml:8: groups.web.primary: cannot read 'ns1' with the tag !!python/object:os.system"
    ]


def test_merge_precedence() -> None:
    # Explicit keys win over merged ones; a merged mapping's own keys win over what it
    # merges in turn; earlier merge sources win over later ones.
    text = """\
x-base: &base {interval: 9s, timeout: 1s, fall: 9}
x-mid: &mid {<<: *base, interval: 8s}
x-other: &other {interval: 7s, rise: 7, fall: 7}
""" + MINIMAL.replace(
        'check: {tcp: "10.0.0.1:22"}', 'check: {<<: [*mid, *other], tcp: "10.0.0.1:22", fall: 2}'
    )
    timing = parse_policy(text, "p.yaml").servers["ns1"].checks[0].timing
    assert timing == CheckTiming(interval=8.0, timeout=1.0, fall=2, rise=7)


def test_secret_value_never_appears() -> None:
    text = "api:\n  application_secret: TOPSECRET\n  consumer_key: [TOPSECRET]\n" + MINIMAL
    out = problems(text)
    assert len(out) == 2
    assert all("TOPSECRET" not in line for line in out)
    assert all("use OVH_* environment variables or an ovh.conf" in line for line in out)


def test_header_names_are_not_mistaken_for_credentials() -> None:
    text = MINIMAL.replace(
        'check: {tcp: "10.0.0.1:22"}',
        'check: {http: "http://10.0.0.1/", headers: {X-Auth-Token: abc}}',
    )
    check = parse_policy(text, "p.yaml").servers["ns1"].checks[0]
    assert isinstance(check, HttpCheck)
    assert check.headers == (("X-Auth-Token", "abc"),)


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["check-config", "-c", str(missing)]) == 78
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"{missing}: cannot read the policy: No such file or directory\n")


def test_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["check-config", "-c", str(tmp_path)]) == 78
    assert capsys.readouterr().err == f"{tmp_path}: cannot read the policy: Is a directory\n"
    if os.geteuid() != 0:  # root reads anything: the permission case needs a normal user
        locked = tmp_path / "locked.yaml"
        locked.write_text(MINIMAL)
        locked.chmod(0)
        assert main(["check-config", "-c", str(locked)]) == 78
        assert "Permission denied" in capsys.readouterr().err


def test_a_file_far_too_big_is_not_read_whole(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # `-c` naming the wrong file (a log, a disk image, /dev/zero) must not fill the memory.
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: no disk used
    assert main(["check-config", "-c", str(huge)]) == 78
    assert capsys.readouterr().err == (
        f"{huge}: cannot read the policy: larger than 16 MiB; is it the policy file?\n"
    )


def test_absurd_nesting_is_one_problem() -> None:
    for text in ("x-a: " + "[" * 2000 + "]" * 2000, "x-a: " + "{a: " * 2000 + "1" + "}" * 2000):
        assert problems(text) == ["p.yaml:1: the document is nested too deeply"]


def test_exponential_aliases_stay_cheap() -> None:
    # "Billion laughs": every level lists the previous one ten times.
    lines = ["x-l0: &l0 [ns2, ns2, ns2, ns2, ns2, ns2, ns2, ns2, ns2, ns2]"]
    for i in range(1, 9):
        lines.append(f"x-l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    text = "\n".join(lines) + "\n" + MINIMAL.replace("standbys: [ns2]", "standbys: *l8")
    out = problems(text)
    assert len(out) == 10  # one per item of the top list: each is a list, not a name
    # An alias is reported where its anchor is: line 8 holds &l7.
    assert out[0] == "p.yaml:8: groups.web.standbys[0]: expected a server name, got a list"
