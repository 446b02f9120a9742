"""Which user uploaded a model or dataset is recorded: the token's user, the admin's operator, or nobody."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app.models import Dataset
from models_app.models import HostedModel
from tests.auth.conftest import token_header
from tests.conftest import saved_tensor

pytestmark = pytest.mark.django_db


def serve_body(model_id: str, archive: bytes) -> dict:
    return {"model_id": model_id, "encoding": "ISO-8859-1", "model": archive.decode("latin-1")}


def test_a_model_uploaded_with_a_token_records_its_user(api, token, mlp_jit):
    response = api.post("/serve-model", serve_body("mine", mlp_jit), format="json", **token_header(token.key))

    assert response.status_code == 200
    assert HostedModel.objects.get(model_id="mine").uploaded_by == token.user


def test_a_model_uploaded_without_one_records_nobody(api, mlp_jit):
    assert api.post("/serve-model", serve_body("anon", mlp_jit), format="json").status_code == 200
    assert HostedModel.objects.get(model_id="anon").uploaded_by is None


def test_a_dataset_uploaded_with_a_token_records_its_user(api, token):
    headers = token_header(token.key)
    assert api.post("/datasets", {"id": "mine", "data": [1.0]}, format="json", **headers).status_code == 201
    assert api.post("/datasets", {"id": "anon", "data": [1.0]}, format="json").status_code == 201

    assert Dataset.objects.get(dataset_id="mine").uploaded_by == token.user
    assert Dataset.objects.get(dataset_id="anon").uploaded_by is None


def test_the_uploader_is_not_part_of_the_api_answers(api, token):
    """Who uploaded what is for operators; the metadata answers stay as the contract has them."""
    api.post("/datasets", {"id": "mine", "data": [1.0]}, format="json", **token_header(token.key))
    assert "uploaded_by" not in api.get("/datasets/mine").json()


def test_deleting_the_user_keeps_their_uploads(api, token, mlp_jit):
    headers = token_header(token.key)
    api.post("/serve-model", serve_body("kept", mlp_jit), format="json", **headers)
    api.post("/datasets", {"id": "kept", "data": [1.0]}, format="json", **headers)

    token.user.delete()

    assert HostedModel.objects.get(model_id="kept").uploaded_by is None
    assert Dataset.objects.get(dataset_id="kept").uploaded_by is None
    assert api.post("/model/kept", {"data": [[0.0] * 4]}, format="json").status_code == 403  # still served


def test_an_admin_upload_records_the_operator(admin_client, admin_user, mlp_jit):
    response = admin_client.post(
        "/admin/models_app/hostedmodel/add/",
        {"model_id": "by-admin", "archive_file": SimpleUploadedFile("m.pt", mlp_jit)},
    )
    assert response.status_code == 302, response.content
    response = admin_client.post(
        "/admin/datasets_app/dataset/add/",
        {"new_dataset_id": "by-admin", "tensor_file": SimpleUploadedFile("d.pt", saved_tensor([1.0])), "tag_lines": ""},
    )
    assert response.status_code == 302, response.content

    assert HostedModel.objects.get(model_id="by-admin").uploaded_by == admin_user
    assert Dataset.objects.get(dataset_id="by-admin").uploaded_by == admin_user


def test_both_admins_show_the_uploader_read_only(admin_client, api, token, mlp_jit):
    headers = token_header(token.key)
    api.post("/serve-model", serve_body("shown", mlp_jit), format="json", **headers)
    api.post("/datasets", {"id": "shown", "data": [1.0]}, format="json", **headers)
    model = HostedModel.objects.get(model_id="shown")
    dataset = Dataset.objects.get(dataset_id="shown")

    for url in (
        f"/admin/models_app/hostedmodel/{model.pk}/change/",
        f"/admin/datasets_app/dataset/{dataset.pk}/change/",
    ):
        page = admin_client.get(url)
        assert page.status_code == 200
        assert "uploaded_by" in page.context["adminform"].readonly_fields
        assert "alice" in page.content.decode()
        assert 'name="uploaded_by"' not in page.content.decode()
    for url in ("/admin/models_app/hostedmodel/", "/admin/datasets_app/dataset/"):
        assert "alice" in admin_client.get(url).content.decode()


def test_editing_in_the_admin_keeps_the_uploader(admin_client, api, token, mlp_jit):
    api.post("/serve-model", serve_body("edited", mlp_jit), format="json", **token_header(token.key))
    model = HostedModel.objects.get(model_id="edited")

    response = admin_client.post(
        f"/admin/models_app/hostedmodel/{model.pk}/change/", {"allow_download": "on", "_save": "Save"}
    )

    assert response.status_code == 302, response.content
    model.refresh_from_db()
    assert (model.allow_download, model.uploaded_by) == (True, token.user)
