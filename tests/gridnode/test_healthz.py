"""GET /healthz: the liveness probe for Kubernetes and load balancers."""

import pytest


@pytest.mark.parametrize("path", ["/healthz", "/healthz/"])
def test_it_is_200_without_a_database(api, path):
    # No django_db mark: the probe must not touch the database.
    response = api.get(path)

    assert response.status_code == 200
    assert response.json() == {"status": "live"}


def test_it_answers_head(api):
    assert api.head("/healthz").status_code == 200


def test_it_is_405_for_post_as_json(api):
    response = api.post("/healthz", {}, format="json")

    assert response.status_code == 405
    assert "error" in response.json()
