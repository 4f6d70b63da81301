"""The policy file: YAML → the frozen :class:`failoverd.policy.Policy` (SPEC §3).

The file is composed (not loaded) with PyYAML's safe composer so that every value keeps
the line it came from; the node tree is then read against the schema by hand. Reading
never stops at the first problem: every problem is collected as an
:class:`~failoverd.errors.Problem` (``FILE:LINE: key.path: message``) and the whole list is
raised at once in a :class:`~failoverd.errors.ConfigError`, sorted by line. A Policy is
only returned when there is nothing to report.

Anchors, aliases and ``<<`` merge keys work; duplicate keys, unknown keys and credentials
do not. Top-level keys starting with ``x-`` are ignored so that anchors have somewhere to
live (the docker-compose convention).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from failoverd.errors import ConfigError, Problem
from failoverd.policy import (
    ApiPolicy,
    Block,
    Check,
    CheckTiming,
    DaemonPolicy,
    ExecCheck,
    FailbackPolicy,
    GroupPolicy,
    GuardsPolicy,
    HooksPolicy,
    HttpCheck,
    IcmpCheck,
    MassFailure,
    MaxFailovers,
    Policy,
    ServerPolicy,
    TcpCheck,
    block_str,
)

__all__ = [
    "KNOWN_ENDPOINTS",
    "PolicyUnreadable",
    "format_duration",
    "load_policy",
    "parse_duration",
    "parse_policy",
]

KNOWN_ENDPOINTS = (
    "ovh-eu",
    "ovh-ca",
    "ovh-us",
    "soyoustart-eu",
    "soyoustart-ca",
    "kimsufi-eu",
    "kimsufi-ca",
)

CREDENTIALS_MESSAGE = (
    "credentials do not belong in the policy; use OVH_* environment variables "
    "or an ovh.conf (api.config_file)"
)

# Key names that hold a credential wherever they appear (compared lower-case, '-' as '_').
# `admin_token_file` is fine: it names a file, which is exactly where a secret should be.
_SECRET_KEY = re.compile(
    r"(^|_)(application_key|application_secret|app_key|app_secret|consumer_key|client_id"
    r"|client_secret|secret|secret_key|password|passwd|token|access_token|api_key|apikey"
    r"|private_key|access_key)$"
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Zµ]*)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_HTTP_METHOD = re.compile(r"^[A-Z]+$")

CHECK_KINDS = ("tcp", "http", "icmp", "exec")
TIMING_KEYS = ("interval", "timeout", "fall", "rise")
HTTP_KEYS = ("expect_status", "expect_body", "headers", "tls_verify", "method")
TOP_KEYS = ("api", "daemon", "defaults", "guards", "servers", "groups")
API_KEYS = ("endpoint", "config_file", "timeout", "requests_per_minute", "move_timeout")
DAEMON_KEYS = (
    "listen",
    "state_dir",
    "admin_token_file",
    "dry_run",
    "log_format",
    "log_level",
    "reconcile_interval",
    "preflight_interval",
)
DEFAULTS_KEYS = ("check", "cooldown", "failback")
GUARDS_KEYS = ("max_parallel_moves", "max_failovers", "mass_failure", "canaries")
SERVER_KEYS = ("check", "checks", "require", "capacity")
GROUP_KEYS = ("primary", "standbys", "blocks", "cooldown", "failback", "hooks")

# Far above any real policy (10,000 servers take about 1 MiB).
MAX_POLICY_BYTES = 16 * 2**20

_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML_TAG + "merge"
# libyaml composes some 25 times faster than pure Python; both keep line marks.
_Composer = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_LOG_FORMATS: dict[str, Literal["json", "console"]] = {"json": "json", "console": "console"}
_LOG_LEVELS: dict[str, Literal["debug", "info", "warning", "error"]] = {
    "debug": "debug",
    "info": "info",
    "warning": "warning",
    "error": "error",
}


class PolicyUnreadable(ConfigError):
    """The policy file could not be read at all (missing, a directory, no permission)."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__([Problem(file, 0, "", f"cannot read the policy: {reason}")])
        self.file = file
        self.reason = reason

    def __str__(self) -> str:
        # One line without a meaningless line number.
        return f"{self.file}: cannot read the policy: {self.reason}"


# --------------------------------------------------------------------------- public API


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file. Raises ConfigError carrying every problem."""
    try:
        with Path(path).open("rb") as f:
            # Bounded: `-c` naming the wrong file (a log, /dev/zero) must not fill memory.
            data = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyUnreadable(str(path), exc.strerror or str(exc)) from exc
    if len(data) > MAX_POLICY_BYTES:
        limit = f"{MAX_POLICY_BYTES // 2**20} MiB"
        raise PolicyUnreadable(str(path), f"larger than {limit}; is it the policy file?")
    policy = parse_policy(data, str(path))
    return Policy(
        api=policy.api,
        daemon=policy.daemon,
        guards=policy.guards,
        servers=policy.servers,
        groups=policy.groups,
        source=Path(path),
    )


def parse_policy(text: str | bytes, filename: str) -> Policy:
    """Validate policy text; `filename` is only used in problem lines."""
    reader = _Reader(filename)
    root = reader.compose(text)
    policy = reader.read_policy(root) if root is not None else None
    if reader.problems or policy is None:
        raise ConfigError(reader.sorted_problems())
    return policy


def parse_duration(value: str | int | float) -> float:
    """``"500ms"``, ``"2s"``, ``"10m"``, ``"1h"``, ``"1d"``, ``"1h30m"``, or seconds as a number.

    Raises ValueError with a message fit for a user.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 2s or 10m, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration_text(value)
    else:
        raise ValueError(f"expected a duration such as 2s or 10m, got {type(value).__name__}")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest readable form: 0.5 → "500ms", 120 → "2m", 5400 → "1h30m"."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        ms = round(seconds * 1000, 3)
        return f"{ms:g}ms"
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out += f"{whole // size}{unit}"
            whole %= size
    return out


def _parse_duration_text(text: str) -> float:
    hint = "use a number with a unit, e.g. 500ms, 2s, 10m, 1h"
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"an empty string is not a duration; {hint}")
    sign = 1.0
    if stripped[0] in "+-":
        sign = -1.0 if stripped[0] == "-" else 1.0
        stripped = stripped[1:].lstrip()
    try:
        return sign * float(stripped)  # bare number of seconds, as a string
    except ValueError:
        pass
    total = 0.0
    pos = 0
    while pos < len(stripped):
        match = _DURATION_PART.match(stripped, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"{text!r} is not a duration; {hint}")
        number, unit = match.groups()
        if unit not in _UNITS:
            if not unit:
                raise ValueError(f"{text!r} has a number without a unit; {hint}")
            raise ValueError(f"unknown unit {unit!r} in {text!r}; use ms, s, m, h or d")
        total += float(number) * _UNITS[unit]
        pos = match.end()
        while pos < len(stripped) and stripped[pos] == " ":
            pos += 1
    return sign * total


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Entry:
    key: str
    key_node: Node
    value: Node

    @property
    def line(self) -> int:
        return _line(self.key_node)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _what(node: Node, value: object = None) -> str:
    """How to name what the user wrote, in an error message."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _compose(loader_class: type[yaml.SafeLoader], text: str) -> Node | None:
    loader = loader_class(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


class _Bad:
    """Marks a scalar that could not even be constructed (its problem is already noted)."""


_BAD = _Bad()


class _Map:
    """One YAML mapping, flattened (merge keys applied), with duplicate keys reported."""

    def __init__(self, reader: _Reader, node: MappingNode, path: str, line: int) -> None:
        self.reader = reader
        self.node = node
        self.path = path
        self.line = line  # where to report a missing key: the line of this mapping's own key
        self.entries: dict[str, _Entry] = {}
        merged: dict[str, _Entry] = {}
        self._collect(node, self.entries, merged, {id(node)})
        for key, entry in merged.items():
            self.entries.setdefault(key, entry)

    def _collect(
        self,
        node: MappingNode,
        explicit: dict[str, _Entry],
        merged: dict[str, _Entry],
        seen: set[int],
    ) -> None:
        reader = self.reader
        check_dups = id(node) not in reader.dup_checked
        reader.dup_checked.add(id(node))
        for key_node, value in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value.value if isinstance(value, SequenceNode) else [value]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        if check_dups:
                            reader.add(source, self.path, "<< can only merge mappings")
                        continue
                    if id(source) in seen:
                        continue  # a mapping merging itself through an alias
                    # The source's own keys win over what it merges in turn.
                    inner: dict[str, _Entry] = {}
                    inner_merged: dict[str, _Entry] = {}
                    self._collect(source, inner, inner_merged, seen | {id(source)})
                    for k, e in [*inner.items(), *inner_merged.items()]:
                        merged.setdefault(k, e)  # earlier merge sources take precedence
                continue
            if not isinstance(key_node, ScalarNode):
                if check_dups:
                    reader.add(
                        key_node, self.path, f"a key must be a plain name, not {_what(key_node)}"
                    )
                continue
            key = str(key_node.value)
            if key in explicit:
                if check_dups:
                    first = explicit[key].line
                    reader.add(
                        key_node,
                        _join(self.path, key),
                        f"duplicate key {key!r} (first at line {first})",
                    )
                continue
            explicit[key] = _Entry(key, key_node, value)

    def check_keys(self, allowed: Sequence[str], ignore: tuple[str, ...] = ()) -> None:
        for key, entry in self.entries.items():
            if key in allowed or id(entry.key_node) in self.reader.secret_keys:
                continue
            if ignore and key.startswith(ignore):
                continue
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            if close:
                hint = f"; did you mean {close[0]!r}?"
            else:
                hint = f"; expected one of: {', '.join(allowed)}"
            self.reader.add(entry.key_node, _join(self.path, key), f"unknown key {key!r}{hint}")

    def get(self, key: str) -> _Entry | None:
        entry = self.entries.get(key)
        if entry is None or id(entry.key_node) in self.reader.secret_keys:
            return None
        return entry

    def sub(self, key: str) -> str:
        return _join(self.path, key)


class _Reader:
    def __init__(self, filename: str) -> None:
        self.file = filename
        self.problems: list[Problem] = []
        self.secret_keys: set[int] = set()
        self.dup_checked: set[int] = set()
        self.check_where: dict[int, tuple[Node, str]] = {}  # id(check) -> its target node
        self._constructor = yaml.SafeLoader("")

    # ---------------------------------------------------------------- problems

    def add(self, where: Node | int, path: str, message: str) -> None:
        line = where if isinstance(where, int) else _line(where)
        self.problems.append(Problem(self.file, line, path, message))

    def sorted_problems(self) -> list[Problem]:
        unique = list(dict.fromkeys(self.problems))
        return sorted(unique, key=lambda p: p.line)

    # ---------------------------------------------------------------- composing

    def compose(self, text: str | bytes) -> Node | None:
        if isinstance(text, bytes):
            data = text
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = data.count(b"\n", 0, exc.start) + 1
                column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
                self.add(
                    line,
                    "",
                    f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x} "
                    f"at column {column}); save it as UTF-8",
                )
                return None
        try:
            try:
                root = _compose(_Composer, text)
            except yaml.YAMLError as exc:
                if "nesting depth" in str(getattr(exc, "problem", "")):
                    raise RecursionError from exc  # pure Python would take seconds to agree
                # Again in pure Python, whose messages are the more precise ones (and do
                # not depend on whether libyaml is installed).
                root = _compose(yaml.SafeLoader, text)
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            char = chr(exc.character) if isinstance(exc.character, int) else exc.character
            self.add(line, "", f"character {char!r} is not allowed in a YAML file")
            return None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = int(mark.line) + 1 if mark is not None else 1
            what = exc.problem or exc.context or "invalid YAML"
            if exc.problem and "'\\t'" in exc.problem:
                self.add(line, "", "YAML syntax error: a tab cannot indent YAML; use spaces")
                return None
            if exc.context and exc.problem:
                # PyYAML's contexts are either "while parsing X" (an aside) or the first
                # half of the sentence ("expected a single document ...").
                if exc.context.startswith("while"):
                    what = f"{exc.problem} ({exc.context})"
                else:
                    what = f"{exc.context} {exc.problem}"
            self.add(line, "", f"YAML syntax error: {what}")
            return None
        except yaml.YAMLError as exc:
            self.add(1, "", f"YAML syntax error: {exc}")
            return None
        except RecursionError:
            self.add(1, "", "the document is nested too deeply")
            return None
        if root is None:
            self.add(1, "", "the policy is empty; it needs at least servers: and groups:")
        return root

    # ---------------------------------------------------------------- scalars

    def value(self, node: Node, path: str) -> object:
        """The Python value of a scalar node; _BAD when it cannot be constructed."""
        if not isinstance(node, ScalarNode):
            return node
        try:
            return self._constructor.construct_object(node)
        # PyYAML raises a mix of ConstructorError, ValueError and OverflowError for scalars
        # whose tag and text disagree (!!int "x", a date like 2024-13-45): all mean the same.
        except (yaml.YAMLError, ValueError, OverflowError, TypeError):
            tag = str(node.tag)
            shown = "!!" + tag[len(_YAML_TAG) :] if tag.startswith(_YAML_TAG) else tag
            self.add(node, path, f"cannot read {node.value!r} with the tag {shown}")
            return _BAD

    def mapping(
        self,
        node: Node,
        path: str,
        line: int,
        allowed: Sequence[str] | None,
        *,
        null_ok: bool = True,
        ignore: tuple[str, ...] = (),
    ) -> _Map | None:
        if isinstance(node, MappingNode):
            m = _Map(self, node, path, line)
            if allowed is not None:
                m.check_keys(allowed, ignore)
            return m
        value = self.value(node, path)
        if value is None and null_ok:
            return _Map(self, MappingNode("tag:yaml.org,2002:map", []), path, line)
        if value is not _BAD:
            self.add(node, path, f"expected a mapping, got {_what(node, value)}")
        return None

    def sequence(self, node: Node, path: str, what: str) -> list[Node] | None:
        if isinstance(node, SequenceNode):
            return list(node.value)
        value = self.value(node, path)
        if value is not _BAD:
            self.add(node, path, f"expected a list of {what}, got {_what(node, value)}")
        return None

    def string(self, node: Node, path: str, *, nullable: bool = False) -> str | None:
        value = self.value(node, path)
        if value is _BAD:
            return None
        if value is None and nullable:
            return None
        if isinstance(value, str):
            if not value.strip():
                self.add(node, path, "must not be empty")
                return None
            return value
        self.add(node, path, f"expected a string, got {_what(node, value)}")
        return None

    def name(self, node: Node, path: str, what: str) -> str | None:
        """A server or group name: numbers are taken as written (a name like 1001 is fine)."""
        if isinstance(node, ScalarNode) and node.tag in (
            "tag:yaml.org,2002:str",
            "tag:yaml.org,2002:int",
        ):
            text = str(node.value)
            if text.strip():
                return text
        value = self.value(node, path)
        if value is not _BAD:
            self.add(node, path, f"expected {what}, got {_what(node, value)}")
        return None

    def integer(self, node: Node, path: str, *, minimum: int, nullable: bool = False) -> int | None:
        value = self.value(node, path)
        if value is _BAD:
            return None
        if value is None and nullable:
            return None
        if isinstance(value, float) and math.isfinite(value):
            self.add(node, path, f"expected a whole number, got {value:g}")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(node, path, f"expected a whole number, got {_what(node, value)}")
            return None
        if value < minimum:
            self.add(node, path, f"must be at least {minimum}, got {value}")
            return None
        return value

    def number(self, node: Node, path: str) -> float | None:
        value = self.value(node, path)
        if value is _BAD:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(node, path, f"expected a number, got {_what(node, value)}")
            return None
        if not math.isfinite(value):
            self.add(node, path, "must be a finite number")
            return None
        return float(value)

    def boolean(self, node: Node, path: str) -> bool | None:
        value = self.value(node, path)
        if value is _BAD:
            return None
        if not isinstance(value, bool):
            self.add(node, path, f"expected true or false, got {_what(node, value)}")
            return None
        return value

    def choice(self, node: Node, path: str, choices: Sequence[str]) -> str | None:
        value = self.value(node, path)
        if value is _BAD:
            return None
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        listed = " or ".join(choices) if len(choices) == 2 else f"one of {', '.join(choices)}"
        if isinstance(value, str):
            self.add(node, path, f"must be {listed}, got {value!r}")
        else:
            self.add(node, path, f"must be {listed}, got {_what(node, value)}")
        return None

    def duration(self, node: Node, path: str, *, positive: bool) -> float | None:
        value = self.value(node, path)
        if value is _BAD:
            return None
        if value is None or not isinstance(value, str | int | float):
            self.add(node, path, f"expected a duration such as 2s or 10m, got {_what(node, value)}")
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.add(node, path, str(exc))
            return None
        if positive and seconds <= 0:
            self.add(node, path, "must be longer than 0")
            return None
        return seconds

    def path_value(self, node: Node, path: str, *, nullable: bool) -> Path | None:
        text = self.string(node, path, nullable=nullable)
        return Path(text) if text is not None else None

    def argv(self, node: Node, path: str, *, nullable: bool) -> tuple[str, ...] | None:
        if nullable and isinstance(node, ScalarNode) and self.value(node, path) is None:
            return None
        if isinstance(node, ScalarNode) and isinstance(self.value(node, path), str):
            self.add(
                node,
                path,
                "expected a command as a list of arguments, "
                f'e.g. ["{node.value.split()[0] if node.value.split() else "/path"}", "--flag"]',
            )
            return None
        items = self.sequence(node, path, "arguments")
        if items is None:
            return None
        if not items:
            self.add(node, path, "the command is empty")
            return None
        args: list[str] = []
        for i, item in enumerate(items):
            sub = f"{path}[{i}]"
            value = self.value(item, sub)
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                args.append(value if isinstance(value, str) else str(item.value))
            elif value is not _BAD:
                self.add(item, sub, f"expected an argument string, got {_what(item, value)}")
        if len(args) != len(items):
            return None
        return tuple(args)

    # ---------------------------------------------------------------- secrets

    def scan_secrets(self, node: Node, path: str) -> None:
        """Flag every key that holds a credential, wherever it is (aliases visited once)."""
        seen: set[int] = set()
        stack: list[tuple[Node, str]] = [(node, path)]
        while stack:
            current, where = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            if isinstance(current, SequenceNode):
                stack.extend((item, f"{where}[{i}]") for i, item in enumerate(current.value))
            elif isinstance(current, MappingNode):
                for key_node, value in current.value:
                    key = str(key_node.value) if isinstance(key_node, ScalarNode) else ""
                    sub = _join(where, key)
                    if _SECRET_KEY.search(key.lower().replace("-", "_")):
                        # The value is never read nor echoed.
                        self.secret_keys.add(id(key_node))
                        self.add(key_node, sub, CREDENTIALS_MESSAGE)
                        continue
                    if key == "headers":
                        # Request headers of an HTTP check may carry a token for the
                        # checked service; that is not an OVH credential.
                        continue
                    stack.append((value, sub))

    # ---------------------------------------------------------------- the policy

    def read_policy(self, root: Node) -> Policy | None:
        self.scan_secrets(root, "")
        top = self.mapping(root, "", 1, TOP_KEYS, null_ok=False, ignore=("x-",))
        if top is None:
            return None
        api = self.read_api(top)
        daemon = self.read_daemon(top)
        timing, cooldown, failback = self.read_defaults(top)
        guards = self.read_guards(top, timing)
        servers, defined = self.read_servers(top, timing)
        groups = self.read_groups(top, defined, cooldown, failback)
        if servers is not None and groups:
            self.check_targets_outside_blocks(servers, groups)
        if self.problems:
            return None
        if api is None or daemon is None or guards is None or servers is None or not groups:
            return None  # unreachable: every None above came with a problem
        return Policy(
            api=api,
            daemon=daemon,
            guards=guards,
            servers={s.name: s for s, _ in servers},
            groups=dict(groups),
        )

    def section(self, top: _Map, key: str, allowed: Sequence[str]) -> _Map | None:
        entry = top.get(key)
        if entry is None:
            return _Map(self, MappingNode("tag:yaml.org,2002:map", []), key, top.line)
        return self.mapping(entry.value, key, entry.line, allowed)

    # api ------------------------------------------------------------------------

    def read_api(self, top: _Map) -> ApiPolicy | None:
        m = self.section(top, "api", API_KEYS)
        if m is None:
            return None
        base = ApiPolicy()
        ok = True
        endpoint = base.endpoint
        if (e := m.get("endpoint")) is not None:
            text = self.string(e.value, m.sub("endpoint"))
            if text is None:
                ok = False
            elif text not in KNOWN_ENDPOINTS and not self.is_base_url(text):
                close = difflib.get_close_matches(text, KNOWN_ENDPOINTS, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.add(
                    e.value,
                    m.sub("endpoint"),
                    f"unknown endpoint {text!r}; {hint}use one of {', '.join(KNOWN_ENDPOINTS)} "
                    "or an http(s) base URL such as http://127.0.0.1:8999/1.0",
                )
                ok = False
            else:
                endpoint = text
        config_file = base.config_file
        if (e := m.get("config_file")) is not None:
            config_file = self.path_value(e.value, m.sub("config_file"), nullable=True)
            ok &= config_file is not None or self.value(e.value, "") is None
        timeout = self.opt_duration(m, "timeout", base.timeout, positive=True)
        move_timeout = self.opt_duration(m, "move_timeout", base.move_timeout, positive=True)
        rpm: int | None = base.requests_per_minute
        if (e := m.get("requests_per_minute")) is not None:
            rpm = self.integer(e.value, m.sub("requests_per_minute"), minimum=1)
        if timeout is None or move_timeout is None:
            return None
        if move_timeout <= timeout:
            where = m.get("move_timeout") or m.get("timeout")
            self.add(
                where.value if where else m.line,
                m.sub("move_timeout" if m.get("move_timeout") else "timeout"),
                f"move_timeout ({format_duration(move_timeout)}) must be longer than "
                f"timeout ({format_duration(timeout)}), the limit of one request",
            )
            return None
        if rpm is None or not ok:
            return None
        return ApiPolicy(
            endpoint=endpoint,
            config_file=config_file,
            timeout=timeout,
            requests_per_minute=rpm,
            move_timeout=move_timeout,
        )

    @staticmethod
    def is_base_url(text: str) -> bool:
        try:
            parts = urllib.parse.urlsplit(text)
            _ = parts.port  # raises ValueError for a bad port
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and bool(parts.hostname)

    def opt_duration(self, m: _Map, key: str, default: float, *, positive: bool) -> float | None:
        entry = m.get(key)
        if entry is None:
            return default
        return self.duration(entry.value, m.sub(key), positive=positive)

    # daemon ---------------------------------------------------------------------

    def read_daemon(self, top: _Map) -> DaemonPolicy | None:
        m = self.section(top, "daemon", DAEMON_KEYS)
        if m is None:
            return None
        base = DaemonPolicy()
        ok = True
        host, port = base.listen_host, base.listen_port
        if (e := m.get("listen")) is not None:
            parsed = self.host_port(e.value, m.sub("listen"), example="127.0.0.1:9877", low=0)
            if parsed is None:
                ok = False
            else:
                host, port = parsed
        state_dir: Path | None = base.state_dir
        if (e := m.get("state_dir")) is not None:
            state_dir = self.path_value(e.value, m.sub("state_dir"), nullable=False)
        token_file = base.admin_token_file
        if (e := m.get("admin_token_file")) is not None:
            token_file = self.path_value(e.value, m.sub("admin_token_file"), nullable=True)
            ok &= token_file is not None or self.value(e.value, "") is None
        dry_run: bool | None = base.dry_run
        if (e := m.get("dry_run")) is not None:
            dry_run = self.boolean(e.value, m.sub("dry_run"))
        log_format: str | None = base.log_format
        if (e := m.get("log_format")) is not None:
            log_format = self.choice(e.value, m.sub("log_format"), ("json", "console"))
        log_level: str | None = base.log_level
        if (e := m.get("log_level")) is not None:
            log_level = self.choice(
                e.value, m.sub("log_level"), ("debug", "info", "warning", "error")
            )
        reconcile = self.opt_duration(
            m, "reconcile_interval", base.reconcile_interval, positive=True
        )
        preflight = self.opt_duration(
            m, "preflight_interval", base.preflight_interval, positive=True
        )
        if (
            not ok
            or state_dir is None
            or dry_run is None
            or reconcile is None
            or preflight is None
            or log_format not in _LOG_FORMATS
            or log_level not in _LOG_LEVELS
        ):
            return None
        return DaemonPolicy(
            listen_host=host,
            listen_port=port,
            state_dir=state_dir,
            admin_token_file=token_file,
            dry_run=dry_run,
            log_format=_LOG_FORMATS[log_format],
            log_level=_LOG_LEVELS[log_level],
            reconcile_interval=reconcile,
            preflight_interval=preflight,
        )

    def host_port(self, node: Node, path: str, *, example: str, low: int) -> tuple[str, int] | None:
        value = self.value(node, path)
        if value is _BAD:
            return None
        bad = f"expected host:port, e.g. {example}"
        if not isinstance(value, str):
            self.add(node, path, f"{bad}, got {_what(node, value)}")
            return None
        text = value.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                self.add(node, path, f"{bad}, got {value!r}")
                return None
            port_text = rest[1:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                self.add(node, path, f"{host!r} is not an IPv6 address")
                return None
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep or not host:
                self.add(node, path, f"{bad}, got {value!r}")
                return None
            if ":" in host:
                self.add(
                    node, path, f"write an IPv6 address in brackets, e.g. [{host}]:{port_text}"
                )
                return None
            if not _HOSTNAME.match(host):
                self.add(node, path, f"{host!r} is not a valid host name or address")
                return None
        if not port_text.isdigit() or not low <= int(port_text) <= 65535:
            self.add(node, path, f"port must be a number from {low} to 65535, got {port_text!r}")
            return None
        return host, int(port_text)

    # defaults -------------------------------------------------------------------

    def read_defaults(self, top: _Map) -> tuple[CheckTiming, float, FailbackPolicy]:
        """Defaults fall back to the built-in ones where invalid (the problem is noted)."""
        m = self.section(top, "defaults", DEFAULTS_KEYS)
        timing = CheckTiming()
        cooldown = GroupPolicy.cooldown
        failback = FailbackPolicy()
        if m is None:
            return timing, cooldown, failback
        if (e := m.get("check")) is not None:
            cm = self.mapping(e.value, m.sub("check"), e.line, TIMING_KEYS)
            if cm is not None:
                timing, set_here, bad = self.read_timing(cm, timing)
                if not bad & {"interval", "timeout"}:
                    self.check_timing(cm, timing, set_here)
        if (e := m.get("cooldown")) is not None:
            value = self.duration(e.value, m.sub("cooldown"), positive=False)
            cooldown = value if value is not None else cooldown
        if (e := m.get("failback")) is not None:
            fb = self.read_failback(e, m.sub("failback"), failback)
            failback = fb if fb is not None else failback
        return timing, cooldown, failback

    def read_timing(self, m: _Map, base: CheckTiming) -> tuple[CheckTiming, set[str], set[str]]:
        """`base` with the valid keys of `m` over it, the keys set, and the invalid ones
        (noted). The caller goes on: an invalid `fall` must not hide a bad target."""
        values: dict[str, float | int] = {}
        bad: set[str] = set()
        for key in ("interval", "timeout"):
            if (e := m.get(key)) is not None:
                d = self.duration(e.value, m.sub(key), positive=True)
                if d is None:
                    bad.add(key)
                else:
                    values[key] = d
        for key in ("fall", "rise"):
            if (e := m.get(key)) is not None:
                n = self.integer(e.value, m.sub(key), minimum=1)
                if n is None:
                    bad.add(key)
                else:
                    values[key] = n
        timing = CheckTiming(
            interval=float(values.get("interval", base.interval)),
            timeout=float(values.get("timeout", base.timeout)),
            fall=int(values.get("fall", base.fall)),
            rise=int(values.get("rise", base.rise)),
        )
        return timing, set(values), bad

    def check_timing(self, m: _Map, timing: CheckTiming, set_here: set[str]) -> bool:
        if timing.timeout < timing.interval:
            return True
        if not set_here & {"timeout", "interval"}:
            return False  # inherited: reported once where it was set (defaults.check)
        key = "timeout" if "timeout" in set_here else "interval"
        entry = m.get(key)
        self.add(
            entry.value if entry else m.line,
            m.sub(key),
            f"timeout ({format_duration(timing.timeout)}) must be shorter than "
            f"interval ({format_duration(timing.interval)})",
        )
        return False

    def read_failback(
        self, entry: _Entry, path: str, base: FailbackPolicy
    ) -> FailbackPolicy | None:
        node = entry.value
        if isinstance(node, ScalarNode):
            mode = self.choice(node, path, ("manual", "auto"))
            if mode is None:
                return None
            return FailbackPolicy(mode="auto" if mode == "auto" else "manual", after=base.after)
        m = self.mapping(node, path, entry.line, ("mode", "after"))
        if m is None:
            return None
        mode_value: str | None = base.mode
        if (e := m.get("mode")) is not None:
            mode_value = self.choice(e.value, m.sub("mode"), ("manual", "auto"))
        after = self.opt_duration(m, "after", base.after, positive=False)
        if mode_value is None or after is None:
            return None
        return FailbackPolicy(mode="auto" if mode_value == "auto" else "manual", after=after)

    # guards ---------------------------------------------------------------------

    def read_guards(self, top: _Map, timing: CheckTiming) -> GuardsPolicy | None:
        m = self.section(top, "guards", GUARDS_KEYS)
        if m is None:
            return None
        base = GuardsPolicy()
        ok = True
        parallel: int | None = base.max_parallel_moves
        if (e := m.get("max_parallel_moves")) is not None:
            parallel = self.integer(e.value, m.sub("max_parallel_moves"), minimum=1)
        max_failovers: MaxFailovers | None = base.max_failovers
        if (e := m.get("max_failovers")) is not None:
            mm = self.mapping(e.value, m.sub("max_failovers"), e.line, ("count", "window"))
            max_failovers = None
            if mm is not None:
                count: int | None = base.max_failovers.count
                if (c := mm.get("count")) is not None:
                    count = self.integer(c.value, mm.sub("count"), minimum=1)
                window = self.opt_duration(mm, "window", base.max_failovers.window, positive=True)
                if count is not None and window is not None:
                    max_failovers = MaxFailovers(count=count, window=window)
        mass: MassFailure | None = base.mass_failure
        if (e := m.get("mass_failure")) is not None:
            mm = self.mapping(e.value, m.sub("mass_failure"), e.line, ("fraction", "min_servers"))
            mass = None
            if mm is not None:
                fraction: float | None = base.mass_failure.fraction
                if (f := mm.get("fraction")) is not None:
                    fraction = self.number(f.value, mm.sub("fraction"))
                    if fraction is not None and not 0 < fraction <= 1:
                        self.add(
                            f.value,
                            mm.sub("fraction"),
                            f"must be more than 0 and at most 1 (a share of the servers), "
                            f"got {fraction:g}",
                        )
                        fraction = None
                min_servers: int | None = base.mass_failure.min_servers
                if (s := mm.get("min_servers")) is not None:
                    min_servers = self.integer(s.value, mm.sub("min_servers"), minimum=1)
                if fraction is not None and min_servers is not None:
                    mass = MassFailure(fraction=fraction, min_servers=min_servers)
        canaries: tuple[Check, ...] | None = ()
        if (e := m.get("canaries")) is not None:
            canaries = self.read_check_list(e, m.sub("canaries"), timing, null_ok=True)
            ok &= canaries is not None
        if not ok or parallel is None or max_failovers is None or mass is None:
            return None
        assert canaries is not None
        return GuardsPolicy(
            max_parallel_moves=parallel,
            max_failovers=max_failovers,
            mass_failure=mass,
            canaries=canaries,
        )

    # checks ---------------------------------------------------------------------

    def read_check_list(
        self, entry: _Entry, path: str, timing: CheckTiming, *, null_ok: bool
    ) -> tuple[Check, ...] | None:
        if null_ok and isinstance(entry.value, ScalarNode) and self.value(entry.value, "") is None:
            return ()
        items = self.sequence(entry.value, path, "checks")
        if items is None:
            return None
        checks: list[Check] = []
        for i, item in enumerate(items):
            check = self.read_check(item, f"{path}[{i}]", _line(item), timing)
            if check is not None:
                checks.append(check)
        return tuple(checks) if len(checks) == len(items) else None

    def read_check(self, node: Node, path: str, line: int, base: CheckTiming) -> Check | None:
        m = self.mapping(node, path, line, (*CHECK_KINDS, *TIMING_KEYS, *HTTP_KEYS), null_ok=False)
        if m is None:
            return None
        kinds = [k for k in CHECK_KINDS if m.get(k) is not None]
        if not kinds:
            self.add(m.line, path, f"a check needs one of {', '.join(CHECK_KINDS)}")
            return None
        if len(kinds) > 1:
            second = m.get(kinds[1])
            assert second is not None
            self.add(
                second.key_node,
                m.sub(kinds[1]),
                f"a check has exactly one kind; this one has {' and '.join(kinds)} "
                "(use checks: for several)",
            )
            return None
        kind = kinds[0]
        ok = True
        if kind != "http":
            for key in HTTP_KEYS:
                if (e := m.get(key)) is not None:
                    self.add(e.key_node, m.sub(key), f"{key} only applies to http checks")
                    ok = False
        timing, set_here, bad = self.read_timing(m, base)
        ok &= not bad
        if not bad & {"interval", "timeout"}:
            ok &= self.check_timing(m, timing, set_here)
        target = m.get(kind)
        assert target is not None
        tpath = m.sub(kind)
        check: Check | None = None
        if kind == "tcp":
            hp = self.host_port(target.value, tpath, example="51.68.100.11:443", low=1)
            if hp is not None:
                check = TcpCheck(host=hp[0], port=hp[1], timing=timing)
        elif kind == "icmp":
            host = self.string(target.value, tpath)
            if host is not None:
                if self.valid_host(host.strip()):
                    check = IcmpCheck(host=host.strip(), timing=timing)
                else:
                    self.add(target.value, tpath, f"{host!r} is not a host name or IP address")
        elif kind == "exec":
            argv = self.argv(target.value, tpath, nullable=False)
            if argv is not None:
                check = ExecCheck(argv=argv, timing=timing)
        else:
            check = self.read_http(m, target, tpath, timing)
        if check is None or not ok:
            return None
        self.check_where[id(check)] = (target.value, tpath)
        return check

    @staticmethod
    def valid_host(host: str) -> bool:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return bool(_HOSTNAME.match(host))
        return True

    def read_http(self, m: _Map, target: _Entry, tpath: str, timing: CheckTiming) -> Check | None:
        url = self.string(target.value, tpath)
        ok = url is not None
        if url is not None and not self.is_base_url(url):
            self.add(target.value, tpath, f"{url!r} is not an http:// or https:// URL")
            ok = False
        statuses: list[int] = []
        if (e := m.get("expect_status")) is not None:
            items: list[Node] | None
            if isinstance(e.value, ScalarNode) and isinstance(self.value(e.value, ""), int):
                items = [e.value]
            else:
                items = self.sequence(e.value, m.sub("expect_status"), "HTTP status codes")
            if items is None:
                ok = False
            for i, item in enumerate(items or []):
                sub = f"{m.sub('expect_status')}[{i}]"
                value = self.value(item, sub)
                if isinstance(value, bool) or not isinstance(value, int):
                    if value is not _BAD:
                        self.add(
                            item, sub, f"expected an HTTP status code, got {_what(item, value)}"
                        )
                    ok = False
                elif not 100 <= value <= 599:
                    self.add(item, sub, f"{value} is not an HTTP status code (100 to 599)")
                    ok = False
                else:
                    statuses.append(value)
        body: str | None = None
        if (e := m.get("expect_body")) is not None:
            body = self.string(e.value, m.sub("expect_body"), nullable=True)
            if body is not None:
                try:
                    re.compile(body)
                except re.error as exc:
                    self.add(
                        e.value, m.sub("expect_body"), f"not a valid regular expression: {exc}"
                    )
                    ok = False
        headers: list[tuple[str, str]] = []
        if (e := m.get("headers")) is not None:
            hm = self.mapping(e.value, m.sub("headers"), e.line, None)
            ok &= hm is not None
            for name, h in (hm.entries if hm else {}).items():
                value = self.value(h.value, "")
                if isinstance(value, str | int | float) and not isinstance(value, bool):
                    headers.append((name, str(value)))
                else:
                    # Never echo a header's value: it may be a bearer token.
                    self.add(
                        h.key_node, m.sub(f"headers.{name}"), "a header value must be a string"
                    )
                    ok = False
        tls_verify: bool | None = True
        if (e := m.get("tls_verify")) is not None:
            tls_verify = self.boolean(e.value, m.sub("tls_verify"))
        method: str | None = "GET"
        if (e := m.get("method")) is not None:
            method = self.string(e.value, m.sub("method"))
            if method is not None and not _HTTP_METHOD.match(method.upper()):
                self.add(e.value, m.sub("method"), f"{method!r} is not an HTTP method")
                method = None
        if not ok or url is None or tls_verify is None or method is None:
            return None
        return HttpCheck(
            url=url,
            expect_status=tuple(statuses),
            expect_body=body,
            headers=tuple(headers),
            tls_verify=tls_verify,
            method=method.upper(),
            timing=timing,
        )

    # servers --------------------------------------------------------------------

    def read_servers(
        self, top: _Map, timing: CheckTiming
    ) -> tuple[list[tuple[ServerPolicy, _Entry]] | None, dict[str, _Entry] | None]:
        """The valid servers, and every *named* server (valid or not) for reference checks.

        Without a usable servers: section there is nothing to check references against
        (None): its own problem says so, once.
        """
        entry = top.get("servers")
        if entry is None:
            self.add(top.line, "servers", "missing: every server named by a group goes here")
            return None, None
        m = self.mapping(entry.value, "servers", entry.line, None, null_ok=False)
        if m is None:
            return None, None
        if not m.entries:
            self.add(entry.key_node, "servers", "no servers defined")
            return None, None
        servers: list[tuple[ServerPolicy, _Entry]] = []
        defined: dict[str, _Entry] = {}
        ok = True
        for name, e in m.entries.items():
            if id(e.key_node) in self.secret_keys:
                continue
            defined[name] = e
            path = m.sub(name)
            if not _SERVER_NAME.match(name):
                self.add(e.key_node, path, f"{name!r} is not an OVH service name")
                ok = False
                continue
            server = self.read_server(name, e, path, timing)
            if server is None:
                ok = False
            else:
                servers.append((server, e))
        return (servers if ok else None), defined

    def read_server(
        self, name: str, entry: _Entry, path: str, timing: CheckTiming
    ) -> ServerPolicy | None:
        m = self.mapping(entry.value, path, entry.line, SERVER_KEYS)
        if m is None:
            return None
        single, several = m.get("check"), m.get("checks")
        checks: tuple[Check, ...] | None = None
        if single is not None and several is not None:
            self.add(
                several.key_node,
                m.sub("checks"),
                "use either check: (one) or checks: (a list), not both",
            )
        elif single is not None:
            if isinstance(single.value, SequenceNode):
                self.add(
                    single.value,
                    m.sub("check"),
                    "check: takes one check; use checks: for a list",
                )
            else:
                one = self.read_check(single.value, m.sub("check"), single.line, timing)
                checks = (one,) if one is not None else None
        elif several is not None:
            checks = self.read_check_list(several, m.sub("checks"), timing, null_ok=False)
            if checks == ():
                self.add(several.value, m.sub("checks"), "the list of checks is empty")
                checks = None
        else:
            self.add(
                m.line,
                path,
                "a server needs a health check (check: or checks:), "
                "or failoverd can never see it up",
            )
        require: str | None = "all"
        if (e := m.get("require")) is not None:
            require = self.choice(e.value, m.sub("require"), ("all", "any"))
        capacity: int | None = None
        capacity_ok = True
        if (e := m.get("capacity")) is not None:
            capacity = self.integer(e.value, m.sub("capacity"), minimum=1, nullable=True)
            capacity_ok = capacity is not None or self.value(e.value, "") is None
        if checks is None or require is None or not capacity_ok:
            return None
        return ServerPolicy(
            name=name,
            checks=checks,
            require="any" if require == "any" else "all",
            capacity=capacity,
        )

    # groups ---------------------------------------------------------------------

    def read_groups(
        self,
        top: _Map,
        defined: dict[str, _Entry] | None,
        cooldown: float,
        failback: FailbackPolicy,
    ) -> dict[str, GroupPolicy] | None:
        entry = top.get("groups")
        if entry is None:
            self.add(top.line, "groups", "missing: a policy needs at least one group")
            return None
        m = self.mapping(entry.value, "groups", entry.line, None, null_ok=False)
        if m is None:
            return None
        if not m.entries:
            self.add(entry.key_node, "groups", "no groups defined")
            return None
        groups: dict[str, GroupPolicy] = {}
        seen_blocks: list[tuple[Block, str, int]] = []  # block, group, line
        ok = True
        for name, e in m.entries.items():
            if id(e.key_node) in self.secret_keys:
                continue
            path = m.sub(name)
            if not _GROUP_NAME.match(name):
                self.add(
                    e.key_node,
                    path,
                    f"group name {name!r} may only use letters, digits, '.', '_' and '-'",
                )
                ok = False
                continue
            group = self.read_group(name, e, path, defined, cooldown, failback, seen_blocks)
            if group is None:
                ok = False
            else:
                groups[name] = group
        return groups if ok else None

    def read_group(
        self,
        name: str,
        entry: _Entry,
        path: str,
        defined: dict[str, _Entry] | None,
        cooldown: float,
        failback: FailbackPolicy,
        seen_blocks: list[tuple[Block, str, int]],
    ) -> GroupPolicy | None:
        m = self.mapping(entry.value, path, entry.line, GROUP_KEYS)
        if m is None:
            return None
        ok = True
        primary: str | None = None
        if (e := m.get("primary")) is None:
            self.add(m.line, m.sub("primary"), "missing: the server that normally holds the blocks")
            ok = False
        else:
            primary = self.name(e.value, m.sub("primary"), "a server name")
            ok &= primary is not None and self.server_defined(
                primary, e.value, m.sub("primary"), defined
            )
        standbys: list[str] = []
        if (e := m.get("standbys")) is None:
            self.add(m.line, m.sub("standbys"), "missing: at least one server to fail over to")
            ok = False
        else:
            items = self.sequence(e.value, m.sub("standbys"), "server names")
            if items is None:
                ok = False
            elif not items:
                self.add(e.value, m.sub("standbys"), "a group needs at least one standby")
                ok = False
            first_line: dict[str, int] = {}
            for i, item in enumerate(items or []):
                sub = f"{m.sub('standbys')}[{i}]"
                server = self.name(item, sub, "a server name")
                if server is None:
                    ok = False
                    continue
                if server == primary:
                    self.add(item, sub, f"{server} is the primary; it cannot be its own standby")
                    ok = False
                elif server in first_line:
                    self.add(
                        item, sub, f"{server} is listed twice (first at line {first_line[server]})"
                    )
                    ok = False
                elif not self.server_defined(server, item, sub, defined):
                    ok = False
                first_line.setdefault(server, _line(item))
                standbys.append(server)
        blocks: list[Block] = []
        if (e := m.get("blocks")) is None:
            self.add(m.line, m.sub("blocks"), "missing: the Additional IP blocks this group moves")
            ok = False
        else:
            items = self.sequence(e.value, m.sub("blocks"), "CIDR blocks")
            if items is None:
                ok = False
            elif not items:
                self.add(e.value, m.sub("blocks"), "a group needs at least one block")
                ok = False
            for i, item in enumerate(items or []):
                block = self.read_block(item, f"{m.sub('blocks')}[{i}]", name, seen_blocks)
                if block is None:
                    ok = False
                else:
                    blocks.append(block)
        group_cooldown = self.opt_duration(m, "cooldown", cooldown, positive=False)
        group_failback: FailbackPolicy | None = failback
        if (e := m.get("failback")) is not None:
            group_failback = self.read_failback(e, m.sub("failback"), failback)
        hooks: HooksPolicy | None = HooksPolicy()
        if (e := m.get("hooks")) is not None:
            hm = self.mapping(e.value, m.sub("hooks"), e.line, ("pre", "post"))
            hooks = None
            if hm is not None:
                argvs: dict[str, tuple[str, ...] | None] = {}
                hooks_ok = True
                for key in ("pre", "post"):
                    if (h := hm.get(key)) is not None:
                        argvs[key] = self.argv(h.value, hm.sub(key), nullable=True)
                        hooks_ok &= argvs[key] is not None or self.value(h.value, "") is None
                if hooks_ok:
                    hooks = HooksPolicy(pre=argvs.get("pre"), post=argvs.get("post"))
        if (
            not ok
            or primary is None
            or group_cooldown is None
            or group_failback is None
            or hooks is None
        ):
            return None
        return GroupPolicy(
            name=name,
            primary=primary,
            standbys=tuple(standbys),
            blocks=tuple(blocks),
            cooldown=group_cooldown,
            failback=group_failback,
            hooks=hooks,
        )

    def server_defined(
        self, server: str, node: Node, path: str, defined: dict[str, _Entry] | None
    ) -> bool:
        if defined is None:
            return False  # no servers: section to look in; reported there
        if server in defined:
            return True
        close = difflib.get_close_matches(server, list(defined), n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        self.add(node, path, f"server {server!r} is not defined in servers{hint}")
        return False

    def read_block(
        self, node: Node, path: str, group: str, seen: list[tuple[Block, str, int]]
    ) -> Block | None:
        value = self.value(node, path)
        if value is _BAD:
            return None
        if not isinstance(value, str):
            self.add(
                node, path, f"expected a CIDR block like 203.0.113.8/29, got {_what(node, value)}"
            )
            return None
        text = value.strip()
        try:
            block: Block = ipaddress.ip_network(text, strict=True)
        except ValueError:
            try:
                loose = ipaddress.ip_network(text, strict=False)
            except ValueError:
                self.add(
                    node,
                    path,
                    f"{text!r} is not a block; write it in CIDR form, e.g. 203.0.113.8/29",
                )
                return None
            self.add(
                node,
                path,
                f"{text} has host bits set; the block is {block_str(loose)}",
            )
            return None
        line = _line(node)
        for other, other_group, other_line in seen:
            if other == block:
                where = "this group" if other_group == group else f"group {other_group}"
                self.add(
                    node, path, f"{block_str(block)} is already in {where} (line {other_line})"
                )
                return None
            if other.version == block.version and block.overlaps(other):
                self.add(
                    node,
                    path,
                    f"{block_str(block)} overlaps {block_str(other)} of group {other_group} "
                    f"(line {other_line}); a block belongs to one group",
                )
                return None
        seen.append((block, group, line))
        return block

    # cross checks ---------------------------------------------------------------

    def check_targets_outside_blocks(
        self,
        servers: list[tuple[ServerPolicy, _Entry]],
        groups: dict[str, GroupPolicy],
    ) -> None:
        """A check aimed at a failover block would follow the block to the standby."""
        for server, _ in servers:
            for check in server.checks:
                host = _check_host(check)
                if host is None:
                    continue
                try:
                    address = ipaddress.ip_address(host)
                except ValueError:
                    continue
                for group in groups.values():
                    for block in group.blocks:
                        if address in block:
                            node, path = self.check_where[id(check)]
                            self.add(
                                node,
                                path,
                                f"a check targets {address}, inside block {block_str(block)} of "
                                f"group {group.name}; after a move that address answers from "
                                "the standby, so check the server's own address",
                            )


def _check_host(check: Check) -> str | None:
    if isinstance(check, TcpCheck | IcmpCheck):
        return check.host
    if isinstance(check, HttpCheck):
        return urllib.parse.urlsplit(check.url).hostname
    return None
