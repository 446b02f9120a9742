"""POST /search-encrypted-models (and with a trailing slash): where an encrypted model's pieces are."""

import pytest

from smpc_app.models import EncryptedModel, NodeAssignment, WorkerNode
from tests.smpc_app.helpers import ALICE, BOB, CAROL, CRYPTO

pytestmark = pytest.mark.django_db

INVALID = {"error": "Invalid payload format"}
NOT_FOUND = {"error": "Model ID not found!"}


def counts() -> tuple[int, int, int]:
    return EncryptedModel.objects.count(), NodeAssignment.objects.count(), WorkerNode.objects.count()


@pytest.mark.parametrize("path", ["/search-encrypted-models", "/search-encrypted-models/"])
def test_it_answers_the_workers_and_crypto_providers_in_order(api, register, path):
    register("mnist", workers=[CAROL, ALICE, BOB], crypto_provider=[CRYPTO, "http://crypto2.example"])
    register("other", workers=[ALICE, BOB], crypto_provider=[CAROL])
    before = counts()

    response = api.post(path, {"model_id": "mnist"}, format="json")

    assert response.status_code == 200
    assert response.json() == {
        "workers": [CAROL, ALICE, BOB],
        "crypto_provider": [CRYPTO, "http://crypto2.example"],
    }
    assert counts() == before


def test_it_accepts_a_form_body(api, register):
    register("mnist")
    response = api.post("/search-encrypted-models", "model_id=mnist", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert response.json() == {"workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}


def test_it_accepts_a_multipart_body(api, register):
    register("mnist")
    response = api.post("/search-encrypted-models", {"model_id": "mnist"}, format="multipart")
    assert response.status_code == 200
    assert response.json() == {"workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}


def test_extra_fields_are_ignored(api, register):
    register("mnist")
    response = api.post("/search-encrypted-models", {"model_id": "mnist", "other": 1}, format="json")
    assert response.status_code == 200


@pytest.mark.parametrize("model_id", ["unknown", "", "../etc/passwd", "x" * 500])
def test_it_answers_404_for_a_model_it_does_not_know(api, register, model_id):
    register("mnist")
    before = counts()

    response = api.post("/search-encrypted-models", {"model_id": model_id}, format="json")

    assert response.status_code == 404
    assert response.json() == NOT_FOUND
    assert counts() == before


def test_a_deleted_model_is_not_found(api, register):
    register("mnist")
    assert api.delete("/encrypted-models/mnist").status_code == 204
    response = api.post("/search-encrypted-models", {"model_id": "mnist"}, format="json")
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        '{"model_id": "mnist"',
        '"mnist"',
        "42",
        '["mnist"]',
        "null",
        "true",
        "{}",
        '{"model": "mnist"}',
        '{"model_id": null}',
        '{"model_id": 42}',
        '{"model_id": ["mnist"]}',
        '{"model_id": {"id": "mnist"}}',
        "",
    ],
)
def test_it_answers_400_for_a_body_that_is_not_an_object_with_a_string_model_id(api, register, body):
    register("mnist")
    before = counts()

    response = api.post("/search-encrypted-models", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == INVALID
    assert counts() == before


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("model_id=mnist", "text/plain"),
        ("model_id=mnist", "application/xml"),
        ("other=mnist", "application/x-www-form-urlencoded"),
    ],
)
def test_it_answers_400_for_a_body_it_cannot_read_as_json_or_a_form(api, register, body, content_type):
    register("mnist")
    response = api.post("/search-encrypted-models", body, content_type=content_type)
    assert response.status_code == 400
    assert response.json() == INVALID


def test_a_file_part_is_not_a_model_id(api, register):
    from django.core.files.uploadedfile import SimpleUploadedFile

    register("mnist")
    response = api.post(
        "/search-encrypted-models", {"model_id": SimpleUploadedFile("id.txt", b"mnist")}, format="multipart"
    )
    assert response.status_code == 400
    assert response.json() == INVALID


def test_get_is_a_json_405(api):
    response = api.get("/search-encrypted-models")
    assert response.status_code == 405
    assert "error" in response.json()
    assert "POST" in response["Allow"]
