"""GET /v2/health/live and /v2/health/ready: the Open Inference Protocol's probes, with no token."""

import pytest
from django.db import OperationalError

from gridnode import health


def test_live_is_200_without_touching_the_database(api):
    # No django_db mark: any database access here would fail the test.
    response = api.get("/v2/health/live")

    assert response.status_code == 200
    assert response.json() == {"live": True}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/v2/health/ready", "/v2/health/ready/"])
def test_ready_is_200_when_the_database_and_storage_work(api, path, data_dir):
    response = api.get(path)

    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"database": "ok", "storage": "ok"}}
    assert list((data_dir / "files").iterdir()) == []  # the probe file is gone


@pytest.mark.django_db
def test_ready_is_503_naming_the_database_when_it_does_not_answer(api, monkeypatch):
    def unreachable():
        raise OperationalError("connection refused")

    monkeypatch.setitem(health.CHECKS, "database", (unreachable, "the database does not answer"))
    response = api.get("/v2/health/ready")

    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "checks": {"database": "failed", "storage": "ok"},
        "error": "Not ready: the database does not answer.",
    }


def test_live_is_405_for_post(api):
    response = api.post("/v2/health/live")

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert "error" in response.json()
