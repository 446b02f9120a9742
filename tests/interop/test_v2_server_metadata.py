"""GET /v2: the server's name, version and extensions, as v2 clients read them."""

import pytest


@pytest.mark.parametrize("path", ["/v2", "/v2/"])
def test_it_names_the_server_and_its_extensions(api, path):
    response = api.get(path)

    assert response.status_code == 200
    assert response.json() == {"name": "gridnode", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


def test_it_answers_json_whatever_the_accept_header_says(api):
    response = api.get("/v2", HTTP_ACCEPT="application/octet-stream")

    assert response.status_code == 200
    assert response.json()["name"] == "gridnode"


def test_it_is_405_for_post(api):
    response = api.post("/v2", {}, format="json")

    assert response.status_code == 405
    assert "error" in response.json()
