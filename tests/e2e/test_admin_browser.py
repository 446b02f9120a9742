"""The admin in a real browser: headless Chromium (Debian's package, driven by Playwright) against a live node.

A staff user logs in, switches a model's remote inference and a dataset's downloads off from the change
lists, and the node's HTTP API then refuses them. The database is set up before the browser starts and
checked after it stops: Playwright's sync API runs an event loop, under which Django's ORM refuses to run.
"""

import shutil
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from django.contrib import admin

from datasets_app.models import Dataset
from models_app.models import HostedModel
from tests.conftest import X

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a-long-test-password-9"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (scripts/setup installs it: apt-get install chromium)",
    ),
]


def http(method: str, url: str, body: dict | None = None) -> int:
    """The status code of a plain HTTP request to the live node."""
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@contextmanager
def chromium_page():
    """A page in a fresh headless Chromium; no ORM call may run until the block ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser("operator", "operator@example.org", PASSWORD)


def log_in(page, base_url: str, next_path: str) -> None:
    page.goto(f"{base_url}/admin/login/?next={next_path}")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_path}")


def untick_in_changelist(page, object_id: str, field: str) -> None:
    """Untick one row's editable checkbox in a change list and save the list."""
    row = page.locator("#result_list tbody tr").filter(has=page.get_by_role("link", name=object_id, exact=True))
    checkbox = row.locator(f"input[type=checkbox][name$='-{field}']")
    assert checkbox.is_checked()
    checkbox.uncheck()
    page.click("input[name=_save]")
    page.wait_for_selector("ul.messagelist li.success")


def test_a_model_switched_off_in_the_admin_refuses_inference(live_server, staff, serve, mlp_jit, tmp_path, capsys):
    serve("shared", mlp_jit, allow_remote_inference=True)
    serve("other", mlp_jit, allow_remote_inference=True)
    screenshot = tmp_path / "admin-models.png"
    infer = f"{live_server.url}/model/{{}}"

    with chromium_page() as page:
        assert http("POST", infer.format("shared"), {"data": X}) == 200
        log_in(page, live_server.url, "/admin/models_app/hostedmodel/")
        page.screenshot(path=str(screenshot), full_page=True)
        untick_in_changelist(page, "shared", "allow_remote_inference")
        refused = http("POST", infer.format("shared"), {"data": X})
        untouched = http("POST", infer.format("other"), {"data": X})

    with capsys.disabled():
        print(f"\nadmin model list screenshot: {screenshot}")
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    assert (refused, untouched) == (403, 200)
    shared, other = HostedModel.objects.get(model_id="shared"), HostedModel.objects.get(model_id="other")
    assert (shared.allow_remote_inference, other.allow_remote_inference) == (False, True)


def test_a_dataset_switched_off_in_the_admin_refuses_downloads(live_server, staff, api):
    if not admin.site.is_registered(Dataset):
        pytest.skip("datasets_app has no admin for Dataset yet")
    for dataset_id in ("shared-data", "other-data"):
        body = {"id": dataset_id, "tags": ["#e2e"], "data": [[1.0, 2.0]], "allow_download": True}
        assert api.post("/datasets", body, format="json").status_code == 201
    download = f"{live_server.url}/datasets/{{}}/data"

    with chromium_page() as page:
        assert http("GET", download.format("shared-data")) == 200
        log_in(page, live_server.url, "/admin/datasets_app/dataset/")
        untick_in_changelist(page, "shared-data", "allow_download")
        refused = http("GET", download.format("shared-data"))
        untouched = http("GET", download.format("other-data"))

    assert (refused, untouched) == (403, 200)
    assert Dataset.objects.get(dataset_id="shared-data").allow_download is False


def test_the_admin_names_the_node_and_its_lists_fit_a_1280_pixel_screen(live_server, staff, serve, mlp_jit, api):
    serve("mnist-classifier-v2", mlp_jit, allow_remote_inference=True)
    body = {
        "id": "hospital-readings-2026",
        "tags": ["#cardiology", "#ecg", "#anonymised"],
        "description": "Twelve-lead readings of consenting patients, resampled to 500 Hz and anonymised. " * 3,
        "data": [[1.0, 2.0]],
    }
    assert api.post("/datasets", body, format="json").status_code == 201
    lists = [
        f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for model in admin.site._registry
        if model._meta.app_label in ("models_app", "datasets_app", "smpc_app")
    ]

    widths = {}
    with chromium_page() as page:
        page.set_viewport_size({"width": 1280, "height": 800})
        log_in(page, live_server.url, "/admin/")
        header = page.locator("#site-name").inner_text()
        for path in lists:
            page.goto(f"{live_server.url}{path}")
            widths[path] = page.evaluate("document.documentElement.scrollWidth")

    assert header == "Grid Node administration"
    assert {path: width for path, width in widths.items() if width > 1280} == {}
