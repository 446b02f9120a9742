"""The admin and the schema UI load through nginx with their CSS and JS, which nginx serves itself from
collectstatic's output (gunicorn never sees them)."""

import re

import pytest

from tests.reliability.helpers import request

ASSET = re.compile(r'(?:href|src)="(/static/[^"]+)"')
TYPES = {".css": "text/css", ".js": "application/javascript"}


@pytest.mark.parametrize("page", ["/admin/login/", "/api/schema/swagger-ui/"])
def test_it_loads_the_page_and_its_static_files(stack, page):
    status, html = request(stack.proxied_url, "GET", page)
    assert status == 200
    assets = ASSET.findall(html.decode())
    assert any(asset.endswith(".css") for asset in assets), assets
    assert any(asset.endswith(".js") for asset in assets), assets

    for asset in assets:
        status, body = request(stack.proxied_url, "GET", asset)
        assert status == 200, asset
        assert body, asset

    stack.log_line(stack.access_log, f'"GET {page} ')  # the page came from gunicorn, its files did not
    assert "/static/" not in stack.access_log.read_text()
