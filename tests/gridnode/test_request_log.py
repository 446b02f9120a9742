"""The request log: one JSON line per request with route, status, duration and model id; never the payload."""

import json
import logging

import pytest

from gridnode.jsonlog import JsonLineFormatter
from models_app import services
from tests.conftest import X

pytestmark = pytest.mark.django_db

SECRET = "payload-marker-51c2"
REQUEST_LOG = logging.getLogger("gridnode.requests")


class KeepRecords(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def lines():
    """The request log's lines as the node writes them, parsed back from JSON."""
    handler = KeepRecords()
    REQUEST_LOG.addHandler(handler)
    formatter = JsonLineFormatter()
    try:
        yield lambda: [json.loads(formatter.format(record)) for record in handler.records]
    finally:
        REQUEST_LOG.removeHandler(handler)


@pytest.fixture
def root_level():
    """Set the root logger's level (what GRIDNODE_LOG_LEVEL sets) for one test."""
    root = logging.getLogger()
    saved = root.level

    def set_level(level):
        root.setLevel(level)

    yield set_level
    root.setLevel(saved)


def test_it_logs_one_line_with_route_status_duration_and_model_id(api, mlp_models, lines, root_level):
    root_level(logging.INFO)
    response = api.post(f"/model/mlp-jit?token={SECRET}", {"data": X, "note": SECRET}, format="json")
    assert response.status_code == 200

    [line] = lines()
    assert line.keys() == {
        "time",
        "level",
        "logger",
        "message",
        "method",
        "path",
        "route",
        "status",
        "duration_ms",
        "model_id",
    }
    assert line["level"] == "INFO"
    assert line["logger"] == "gridnode.requests"
    assert (line["method"], line["path"], line["route"], line["status"]) == (
        "POST",
        "/model/mlp-jit",
        "model-inference",
        200,
    )
    assert line["model_id"] == "mlp-jit"
    assert 0 < line["duration_ms"] < 60_000
    assert SECRET not in json.dumps(line)


def test_a_route_without_a_model_has_no_model_id(api, lines, root_level):
    root_level(logging.INFO)
    api.get("/healthz")
    api.get("/no/such/path")

    first, second = lines()
    assert "model_id" not in first
    assert (first["route"], first["status"]) == ("healthz", 200)
    assert (second["route"], second["path"], second["status"]) == ("unmatched", "/no/such/path", 404)


def test_server_errors_log_at_error_level(api, lines, root_level, monkeypatch):
    root_level(logging.INFO)

    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(services, "model_ids", broken)
    api.raise_request_exception = False
    assert api.get("/models").status_code == 500

    [line] = lines()
    assert (line["level"], line["route"], line["status"]) == ("ERROR", "models", 500)


def test_the_level_follows_the_root_level_gridnode_log_level_sets(api, lines, root_level):
    root_level(logging.WARNING)
    api.get("/healthz")

    assert lines() == []


def test_the_configured_handler_writes_json_lines_apart_from_other_logs():
    assert REQUEST_LOG.propagate is False
    assert REQUEST_LOG.level == logging.NOTSET  # the level comes from the root, i.e. GRIDNODE_LOG_LEVEL
    # (pytest's own capture handlers may sit beside the node's.)
    assert JsonLineFormatter in {type(handler.formatter) for handler in REQUEST_LOG.handlers}


def test_a_path_with_unicode_line_breaks_is_one_line_to_every_reader(api, root_level):
    """JSON leaves U+2028, U+2029 and NEL unescaped in strings; str.splitlines (and other tools) break lines
    at them: a request for /model/a%E2%80%A8%C2%85%E2%80%A9b made its log line seven (found by a stranger)."""
    root_level(logging.INFO)
    handler = KeepRecords()
    REQUEST_LOG.addHandler(handler)
    try:
        api.post("/model/a%E2%80%A8%C2%85%E2%80%A9b", {"data": X}, format="json")
    finally:
        REQUEST_LOG.removeHandler(handler)

    [record] = handler.records
    written = JsonLineFormatter().format(record)
    assert len(written.splitlines()) == 1
    assert json.loads(written)["path"] == "/model/a\u2028\x85\u2029b"
