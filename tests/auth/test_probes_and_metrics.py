"""Probes never need a token; /metrics needs one only under GRIDNODE_AUTH_METRICS."""

import pytest

from gridnode.auth import METRICS
from tests.auth.conftest import assert_unauthorized, token_header

pytestmark = pytest.mark.django_db

PROBES = ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"]


@pytest.mark.parametrize("path", PROBES)
def test_probes_answer_without_a_token_when_every_group_is_closed(client, close, path):
    close()
    assert client.get(path).status_code == 200
    assert client.get(path, HTTP_AUTHORIZATION="Token wrong").status_code == 200


def test_metrics_are_open_by_default(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert b"gridnode_http_requests_total" in response.content


def test_metrics_need_a_token_when_closed(client, close, token):
    close(METRICS)

    assert_unauthorized(client.get("/metrics"), "This endpoint needs a token: send 'Authorization: Token <key>'.")
    assert_unauthorized(client.get("/metrics", **token_header("0" * 40)), "Invalid token.")
    response = client.get("/metrics", **token_header(token.key))
    assert response.status_code == 200
    assert b"gridnode_http_requests_total" in response.content


def test_closing_every_api_group_leaves_metrics_open(client, close):
    close("read", "write", "inference", "download")
    assert client.get("/metrics").status_code == 200
