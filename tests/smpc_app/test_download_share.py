"""GET /encrypted-models/<model_id>/share/data: the part's exact bytes, streamed, if its owner allows copies."""

import hashlib

import pytest
from rest_framework.authtoken.models import Token

from smpc_app.models import ModelShare

pytestmark = pytest.mark.django_db


def downloaded(response) -> bytes:
    """The body of a streamed answer."""
    return b"".join(response.streaming_content)


@pytest.mark.parametrize("path", ["/encrypted-models/copy:1/share/data", "/encrypted-models/copy:1/share/data/"])
def test_it_streams_the_stored_bytes(api, upload_share, part_bytes, path):
    uploaded = upload_share("copy:1", "worker", 1, allow_download=True)

    response = api.get(path)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="copy:1.share.pt"'
    body = downloaded(response)
    assert body == part_bytes("worker", 1)
    assert int(response["Content-Length"]) == len(body) == uploaded["size"]
    assert hashlib.sha256(body).hexdigest() == uploaded["sha256"] == ModelShare.objects.get().sha256


def test_it_answers_a_client_that_asks_for_octet_stream(api, upload_share, part_bytes):
    upload_share("raw", "crypto_provider", None, allow_download=True)

    response = api.get("/encrypted-models/raw/share/data", HTTP_ACCEPT="application/octet-stream")

    assert response.status_code == 200
    assert downloaded(response) == part_bytes("crypto_provider")


def test_it_answers_403_unless_the_owner_allows_downloads(api, upload_share):
    upload_share("private", allow_remote_inference=True)

    response = api.get("/encrypted-models/private/share/data", HTTP_ACCEPT="application/octet-stream")

    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "You're not allowed to download this encrypted model's share."}
    assert ModelShare.objects.get().allow_download is False


def test_allowing_downloads_with_patch_opens_it(api, upload_share, part_bytes):
    upload_share("later")
    assert api.get("/encrypted-models/later/share/data").status_code == 403

    assert api.patch("/encrypted-models/later/share", {"allow_download": True}, format="json").status_code == 200
    response = api.get("/encrypted-models/later/share/data")

    assert response.status_code == 200
    assert downloaded(response) == part_bytes("worker", 0)

    assert api.patch("/encrypted-models/later/share", {"allow_download": "false"}, format="json").status_code == 200
    assert api.get("/encrypted-models/later/share/data").status_code == 403


def test_it_answers_404_without_a_share(api, register):
    register("bare")
    response = api.get("/encrypted-models/bare/share/data")
    assert response.status_code == 404
    assert response.json() == {"error": "This node holds no share of this encrypted model."}


def test_it_answers_404_for_an_unknown_model(api):
    response = api.get("/encrypted-models/unknown/share/data")
    assert response.status_code == 404
    assert response.json() == {"error": "Encrypted model not found."}


def test_it_answers_404_when_the_file_went_after_the_row_was_read(api, upload_share):
    upload_share("racing", allow_download=True)
    ModelShare.objects.get().archive.delete(save=False)

    response = api.get("/encrypted-models/racing/share/data")

    assert response.status_code == 404
    assert response.json() == {"error": "This node holds no share of this encrypted model."}


def test_it_answers_400_for_an_id_outside_the_rules(api):
    response = api.get("/encrypted-models/bad!id/share/data")
    assert response.status_code == 400
    assert "'model_id'" in response.json()["error"]


def test_it_is_in_the_download_group(api, upload_share, settings, django_user_model):
    upload_share("guarded", allow_download=True)
    settings.GRIDNODE_AUTH_DOWNLOAD = True

    refused = api.get("/encrypted-models/guarded/share/data")
    key = Token.objects.create(user=django_user_model.objects.create_user("reader")).key
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    allowed = api.get("/encrypted-models/guarded/share/data")

    assert refused.status_code == 401
    assert allowed.status_code == 200
    assert downloaded(allowed)


def test_post_on_the_data_is_a_405(api, upload_share):
    upload_share("fixed", allow_download=True)
    response = api.post("/encrypted-models/fixed/share/data", {}, format="json")
    assert response.status_code == 405
    assert "error" in response.json()
    assert ModelShare.objects.count() == 1
