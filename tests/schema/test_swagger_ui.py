"""GET /api/schema/swagger-ui/: Swagger UI over the document, its JS and CSS served by the node itself.

A deployed node may have no internet access (this machine has none): the page must never need a CDN.
"""

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.test_admin_browser import CHROMIUM, chromium_page

ASSET = re.compile(r"""(?:src|href)="([^"]+\.(?:js|css|png))\"""")
SIDECAR = "/static/drf_spectacular_sidecar/swagger-ui-dist/"


def ui_page(client) -> tuple[str, list[str]]:
    response = client.get("/api/schema/swagger-ui/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    return html, ASSET.findall(html)


@pytest.mark.django_db
def test_it_renders_with_local_assets_only(client):
    html, assets = ui_page(client)

    assert "<title>Grid Node</title>" in html
    assert f"{SIDECAR}swagger-ui-bundle.js" in assets
    assert f"{SIDECAR}swagger-ui.css" in assets
    assert all(asset.startswith(SIDECAR) for asset in assets), assets
    # A CDN would be named in a URL; the bare letters can turn up in the page's random CSRF token.
    assert not re.search(r"//[^\s\"']*cdn", html.lower())
    assert "/api/schema" in html  # the document it shows is this node's


@pytest.mark.django_db
def test_it_serves_every_asset_the_page_names(client):
    _, assets = ui_page(client)

    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert len(body) > 100, asset
    bundle = client.get(f"{SIDECAR}swagger-ui-bundle.js")
    assert bundle["Content-Type"].startswith(("application/javascript", "text/javascript"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (scripts/test does)")
def test_it_draws_every_operation_in_a_browser_without_internet(live_server):
    """Headless Chromium with every request to another host refused: the UI still draws the document."""
    node = urlsplit(live_server.url).netloc
    elsewhere = []

    with chromium_page() as page:

        def only_the_node(route):
            if urlsplit(route.request.url).netloc == node:
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort()

        page.route("**/*", only_the_node)
        page.goto(f"{live_server.url}/api/schema/swagger-ui/")
        page.wait_for_selector(".swagger-ui .info .title")
        title = page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector(".opblock-summary-path")
        drawn_paths = {text.replace("\u200b", "") for text in page.locator(".opblock-summary-path").all_inner_texts()}

    assert elsewhere == []
    assert title.startswith("Grid Node")
    assert {"/serve-model", "/model/{model_id}", "/datasets", "/v2/models/{model_id}/infer", "/healthz"} <= drawn_paths
