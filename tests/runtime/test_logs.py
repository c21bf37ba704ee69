from __future__ import annotations

import io
import json

import structlog

from srd import logs


def test_log_lines_are_json_with_bound_context_and_redacted_secrets() -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    log = logs.get_logger("test")
    with structlog.contextvars.bound_contextvars(correlation_id="abc123", task="probe:x"):
        log.info("probe done", bearer_token="hunter2", target="web")
    log.debug("hidden at info level")
    [line] = [json.loads(text) for text in out.getvalue().splitlines()]
    assert line["event"] == "probe done"
    assert line["correlation_id"] == "abc123"
    assert line["task"] == "probe:x"
    assert line["bearer_token"] == "**redacted**"
    assert line["level"] == "info"
    assert "hunter2" not in out.getvalue()
    logs.configure("info", "json")


def test_exceptions_in_json_logs_carry_the_traceback_as_text() -> None:
    out = io.StringIO()
    logs.configure("debug", "json", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logs.get_logger("test").exception("task crashed")
    line = json.loads(out.getvalue())
    assert "RuntimeError: boom" in line["exception"]
    logs.configure("info", "json")
