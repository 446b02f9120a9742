"""Probes, metrics, the request log, the admin's login and the client address work behind nginx; the
address a client claims in X-Forwarded-For counts only when nginx set it."""

import re
import uuid

import pytest
import requests

from tests.reliability.helpers import request


def test_it_answers_the_probes_and_metrics(stack):
    assert request(stack.proxied_url, "GET", "/healthz") == (200, {"status": "live"})
    status, ready = request(stack.proxied_url, "GET", "/readyz")
    assert (status, ready["checks"]) == (200, {"database": "ok", "storage": "ok"})
    status, metrics = request(stack.proxied_url, "GET", "/metrics")
    assert status == 200
    assert b'gridnode_http_requests_total{endpoint="readyz",method="GET",status="200"}' in metrics


def test_it_logs_each_proxied_request(stack):
    path = f"/nowhere/{uuid.uuid4().hex}"
    assert request(stack.proxied_url, "GET", path)[0] == 404

    line = stack.log_line(stack.gunicorn_log, f'"path":"{path}"')
    assert re.search(r'"logger":"gridnode.requests".*"route":"unmatched","status":404', line)


@pytest.mark.parametrize(("route", "forwarded_for"), [("proxied", "127.0.0.1"), ("direct", "-")])
def test_it_trusts_x_forwarded_for_only_from_nginx(stack, route, forwarded_for):
    url = stack.proxied_url if route == "proxied" else stack.direct_url
    probe = uuid.uuid4().hex

    status, _ = request(url, "GET", f"/healthz?{probe}", headers={"X-Forwarded-For": "203.0.113.7"})

    assert status == 200
    line = stack.log_line(stack.access_log, probe)
    assert line.split()[0] == forwarded_for  # gunicorn's access log: the forwarded address first
    assert "203.0.113.7" not in line


def test_it_lets_the_admin_log_in(stack):
    stack.manage("createsuperuser", "--no-input", "--username", "admin", "--email", "admin@example.com")
    session = requests.Session()
    login = session.get(f"{stack.proxied_url}/admin/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)

    answer = session.post(
        f"{stack.proxied_url}/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": token, "username": "admin", "password": "admin-password-1"},
        headers={"Origin": stack.proxied_url},
        allow_redirects=False,
        timeout=10,
    )

    assert answer.status_code == 302, answer.text[:500]
    assert answer.headers["Location"] == "/admin/"
    assert session.get(f"{stack.proxied_url}/admin/", timeout=10).status_code == 200
