"""Fuzzing the policy reader: thousands of mutated policies (deletions, type swaps,
truncations, duplicated keys, bad indentation, non-UTF-8 bytes) either load or fail
with a ConfigError whose every line is ``FILE:LINE: ...`` — never another exception.

Seeded, so a failure names the seed and case that reproduces it.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from failoverd.cli import main
from failoverd.config import parse_policy
from failoverd.errors import ConfigError
from failoverd.policy import Policy

ROOT = Path(__file__).parent.parent
VALID = (ROOT / "config" / "failoverd.example.yaml").read_bytes()
MINIMAL = b"""\
servers:
  ns1: {check: {tcp: "10.0.0.1:22"}}
  ns2:
    checks: [{icmp: 10.0.0.2}, {http: "http://10.0.0.2/", expect_status: [200]}]
groups:
  web: {primary: ns1, standbys: [ns2], blocks: [203.0.113.8/29, 198.51.100.7/32]}
"""
BROKEN = [p.read_bytes() for p in sorted((Path(__file__).parent / "policies").glob("*.yaml"))]
LINE = re.compile(r"^fuzz\.yaml:\d+: \S")
CASES = 3000

VALUES = [
    "[]",
    "{}",
    "null",
    "~",
    "true",
    "42",
    "-1",
    "0",
    "1.5e400",
    ".nan",
    "'x'",
    '""',
    "*nowhere",
    "&a [*a]",
    "!!binary aGVsbG8=",
    "!!int nope",
    "!!python/object:os.system x",
    "!custom x",
    "2024-13-45",
    "2024-01-01",
    "1:30",
    "[1, [2, [3]]]",
    "{a: b, a: c}",
    "0x1F",
    "'203.0.113.9/29'",
    "'::1:80'",
    "|\n  block text",
    "'1h30m'",
    "10x",
    "<<: {}",
]
JUNK = [
    b"\xff",
    b"\xc3\x28",
    b"\xe9",
    b"\x00",
    b"\x07",
    b"\t",
    b"\r",
    b"\xef\xbb\xbf",
    b":",
    b"- ",
    b"[",
    b"}",
    b"'",
    b'"',
    b"&",
    b"*",
    b"!",
    b"%",
    b"@",
    b"`",
    b"#",
    b"\n",
]


def mutate(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    op = rng.randrange(9)
    i = rng.randrange(len(lines))
    if op == 0:  # delete a line
        del lines[i]
    elif op == 1:  # duplicate a line (duplicate keys, repeated list items)
        lines.insert(i, lines[i])
    elif op == 2:  # swap the value of a key for something of another type
        key, sep, _ = lines[i].partition(b": ")
        if sep:
            lines[i] = key + sep + rng.choice(VALUES).encode()
    elif op == 3:  # change the indentation
        lines[i] = rng.choice([b" ", b"  ", b""]) + lines[i][rng.randrange(3) :]
    elif op == 4:  # truncate
        return data[: rng.randrange(len(data) + 1)]
    elif op == 5:  # delete a span of characters
        start = rng.randrange(len(data) + 1)
        return data[:start] + data[start + rng.randrange(1, 12) :]
    elif op == 6:  # insert junk, often not UTF-8
        pos = rng.randrange(len(data) + 1)
        return data[:pos] + rng.choice(JUNK) + data[pos:]
    elif op == 7:  # swap two lines
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    else:  # replace a byte with a random one
        if data:
            pos = rng.randrange(len(data))
            return data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1 :]
    return b"\n".join(lines)


def generate(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        # Mostly valid policies (so that mutations can still load), some broken ones.
        data = rng.choice((VALID, VALID, MINIMAL, rng.choice(BROKEN)))
        for _ in range(rng.choice((1, 1, 2, 3))):
            data = mutate(data, rng)
        out.append(data)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_policies_load_or_fail_cleanly(seed: int) -> None:
    outcomes = {"loaded": 0, "refused": 0}
    for n, data in enumerate(generate(seed, CASES // 3)):
        try:
            policy = parse_policy(data, "fuzz.yaml")
        except ConfigError as exc:
            lines = str(exc).splitlines()
            outcomes["refused"] += 1
        else:
            assert isinstance(policy, Policy)
            outcomes["loaded"] += 1
            continue
        assert lines, f"seed {seed} case {n}: ConfigError without problems"
        for line in lines:
            assert LINE.match(line), f"seed {seed} case {n}: {line!r}"
    # The mutations must exercise both paths, or the test proves little.
    assert outcomes["refused"] > CASES // 60
    assert outcomes["loaded"] > CASES // 60


def test_mutated_policies_through_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fuzz.yaml"
    codes = set()
    for n, data in enumerate(generate(99, 150)):
        path.write_bytes(data)
        code = main(["check-config", "-c", str(path)])
        out, err = capsys.readouterr()
        codes.add(code)
        if code == 0:
            assert out.startswith("ok: "), f"case {n}"
            assert err == ""
        else:
            assert code == 78, f"case {n}: exit {code}"
            assert err, f"case {n}: no problem printed"
            for line in err.splitlines():
                assert line.startswith(f"{path}:"), f"case {n}: {line!r}"
                assert re.match(r"^.+:\d+: \S", line), f"case {n}: {line!r}"
    assert codes == {0, 78}
