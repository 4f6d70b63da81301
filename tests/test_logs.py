"""Logging: JSON shape, stdlib loggers through the same pipeline, secrets masked."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog

from failoverd.logs import (
    FIXED_KEYS,
    REDACTED,
    SECRETS,
    configure_logging,
    register_secret,
    reset_logging,
)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream)
    yield stream
    SECRETS.clear()
    reset_logging()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_structlog_line_is_json_with_fixed_key_order(out: io.StringIO) -> None:
    structlog.get_logger("failoverd.test").info(
        "moved", extra_key=1, took_s=0.25, group="web", block="203.0.113.8/29", task_id=7
    )
    (line,) = lines(out)
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]
    assert line["event"] == "moved"
    assert line["level"] == "info"
    keys = list(line)
    present = [k for k in FIXED_KEYS if k in line]
    assert present == ["group", "block", "task_id", "took_s"]
    assert keys[4:8] == present  # fixed keys come right after the leading ones
    assert keys[-1] == "extra_key"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", str(line["timestamp"]))


def test_stdlib_loggers_render_the_same_way(out: io.StringIO) -> None:
    logging.getLogger("ovh.client").warning("slow answer from %s", "api.ovh.com")
    (line,) = lines(out)
    assert line["logger"] == "ovh.client"
    assert line["level"] == "warning"
    assert line["event"] == "slow answer from api.ovh.com"


def test_level_filters(out: io.StringIO) -> None:
    configure_logging("json", "warning", stream=out)
    log = structlog.get_logger("x")
    log.info("hidden")
    logging.getLogger("aiohttp.server").info("hidden too")
    log.warning("shown")
    assert [line["event"] for line in lines(out)] == ["shown"]


def test_secret_keys_and_registered_secrets_are_masked(out: io.StringIO) -> None:
    register_secret("s3cr3t-consumer-key-value", None, "", "abc")  # empty/short ignored
    log = structlog.get_logger("x")
    log.info(
        "request",
        application_secret="plain-secret-1",
        headers={"Authorization": "Bearer zzzzzz", "X-Ovh-Signature": "$1$abc", "Accept": "a"},
        url="https://eu.api.ovh.com/1.0/me?ck=s3cr3t-consumer-key-value",
    )
    logging.getLogger("urllib3").error("failed with s3cr3t-consumer-key-value inside")
    text = out.getvalue()
    for secret in ("plain-secret-1", "zzzzzz", "$1$abc", "s3cr3t-consumer-key-value"):
        assert secret not in text
    first, second = lines(out)
    assert first["application_secret"] == REDACTED
    assert first["headers"] == {
        "Authorization": REDACTED,
        "X-Ovh-Signature": REDACTED,
        "Accept": "a",
    }
    assert first["url"] == f"https://eu.api.ovh.com/1.0/me?ck={REDACTED}"
    assert second["event"] == f"failed with {REDACTED} inside"
    log.info("abc is an ordinary word")
    assert lines(out)[-1]["event"] == "abc is an ordinary word"  # too short to be registered


def test_tracebacks_are_rendered_and_masked(out: io.StringIO) -> None:
    register_secret("token-in-a-traceback")
    try:
        raise RuntimeError("boom token-in-a-traceback")
    except RuntimeError:
        structlog.get_logger("x").exception("crashed")
    (line,) = lines(out)
    assert "RuntimeError: boom" in str(line["exception"])
    assert "token-in-a-traceback" not in out.getvalue()


def test_console_format_is_readable(out: io.StringIO) -> None:
    stream = io.StringIO()
    configure_logging("console", "info", stream=stream)
    register_secret("console-secret-123")
    structlog.get_logger("x").info("server down", server="ns1", note="console-secret-123")
    text = stream.getvalue()
    assert "server down" in text
    assert "server" in text
    assert "ns1" in text
    assert "console-secret-123" not in text
    assert not text.lstrip().startswith("{")
