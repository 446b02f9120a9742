"""GET /encrypted-models/<model_id>/share/data: never a part's bytes. Any two of a model's three parts
rebuild its weights, so no part is downloadable: allow_download is refused at upload, by PATCH, in the
admin and by the database, and the download answers 403.

Before: `host_encrypted_model(allow_download=True)` set the flag on all three parts, and any two
downloads gave the model away.
"""

import io
import json

import pytest
import torch
from django.db import IntegrityError, transaction

from gridclient.encrypted import host_encrypted_model
from smpc_app.models import EncryptedModel, ModelShare
from smpc_app.shares import NEVER_DOWNLOADABLE

pytestmark = pytest.mark.django_db

NOT_ALLOWED = {"error": "You're not allowed to download this encrypted model's share."}


@pytest.mark.parametrize("path", ["/encrypted-models/copy:1/share/data", "/encrypted-models/copy:1/share/data/"])
def test_a_stored_part_is_never_downloaded(api, upload_share, path):
    upload_share("copy:1", "worker", 1, allow_remote_inference=True)

    response = api.get(path, HTTP_ACCEPT="application/octet-stream")

    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json() == NOT_ALLOWED


@pytest.mark.parametrize("value", [True, "True", "true", "1"])
def test_uploading_a_downloadable_part_is_a_400_and_stores_nothing(api, register, shared_model, part_bytes, value):
    register("open")
    body = {
        "role": "crypto_provider",
        "spec": json.dumps(shared_model.spec.to_json()),
        "share": io.BytesIO(part_bytes("crypto_provider")),
        "allow_download": str(value),
    }

    response = api.post("/encrypted-models/open/share", body, format="multipart")

    assert response.status_code == 400
    assert response.json() == {"error": NEVER_DOWNLOADABLE}
    assert not ModelShare.objects.exists()


def test_patch_cannot_open_a_part_for_download(api, upload_share):
    upload_share("later")

    opened = api.patch("/encrypted-models/later/share", {"allow_download": True}, format="json")
    closed = api.patch("/encrypted-models/later/share", {"allow_download": False}, format="json")

    assert opened.status_code == 400
    assert opened.json() == {"error": NEVER_DOWNLOADABLE}
    assert closed.status_code == 200
    assert ModelShare.objects.get().allow_download is False
    assert api.get("/encrypted-models/later/share/data").status_code == 403


def test_the_database_refuses_a_downloadable_part(upload_share):
    upload_share("guarded")

    with pytest.raises(IntegrityError), transaction.atomic():
        ModelShare.objects.update(allow_download=True)

    assert ModelShare.objects.get().allow_download is False


def test_hosting_with_allow_download_is_refused_before_anything_is_sent(shared_model):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))

    with pytest.raises(ValueError, match="never downloadable"):
        host_encrypted_model(
            model,
            (4,),
            "published",
            workers=["http://127.0.0.1:9", "http://127.0.0.1:10"],
            crypto_provider="http://127.0.0.1:11",
            allow_download=True,
        )

    assert not EncryptedModel.objects.exists()


def test_it_answers_404_without_a_share(api, register):
    register("bare")
    response = api.get("/encrypted-models/bare/share/data")
    assert response.status_code == 404
    assert response.json() == {"error": "This node holds no share of this encrypted model."}


def test_it_answers_404_for_an_unknown_model(api):
    response = api.get("/encrypted-models/unknown/share/data")
    assert response.status_code == 404
    assert response.json() == {"error": "Encrypted model not found."}


def test_it_answers_400_for_an_id_outside_the_rules(api):
    response = api.get("/encrypted-models/bad!id/share/data")
    assert response.status_code == 400
    assert "'model_id'" in response.json()["error"]


def test_it_is_in_the_download_group(api, upload_share, settings):
    upload_share("guarded")
    settings.GRIDNODE_AUTH_DOWNLOAD = True

    refused = api.get("/encrypted-models/guarded/share/data")

    assert refused.status_code == 401


def test_post_on_the_data_is_a_405(api, upload_share):
    upload_share("fixed")
    response = api.post("/encrypted-models/fixed/share/data", {}, format="json")
    assert response.status_code == 405
    assert "error" in response.json()
    assert ModelShare.objects.count() == 1
