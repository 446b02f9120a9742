"""What the schemathesis run (test_fuzz_live_node.py) found in the node's behaviour, each kept as a test.

(What it found in the document itself, fixed there: `GET /models` and `GET /encrypted-models` described as
arrays of their answer; the 404 that DRF gives an unknown `?format=` on the model endpoints left out.)
"""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_it_answers_options_on_the_ui_page_with_a_json_405(api):
    # Was a 500: DRF answered OPTIONS through Swagger UI's template renderer, which has no template for it.
    response = api.options("/api/schema/swagger-ui")

    assert response.status_code == 405
    assert set(response.json()) == {"error"}
    assert response["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("how", [{"HTTP_ACCEPT": "application/octet-stream"}, {"QUERY_STRING": "format=bin"}])
def test_it_sends_a_jit_archive_as_octet_stream(api, serve, mlp_jit, how):
    # Was application/vnd.snesdev-page-table: the type was guessed from the file name demo.pt.
    serve("demo", mlp_jit, allow_download=True)

    response = api.get("/get_model/demo", **how)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert b"".join(response.streaming_content) == mlp_jit


def test_it_answers_a_post_to_metrics_with_a_json_405():
    # Was a 403 from Django's CSRF check (a plain view, unlike the probes, was not exempt); the test client
    # skips that check unless told, as a real client's request would not.
    response = Client(enforce_csrf_checks=True).post("/metrics", {"a": "b"})

    assert response.status_code == 405
    assert set(response.json()) == {"error"}
    assert response["Allow"] == "GET, HEAD"
