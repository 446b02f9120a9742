"""The admin: operators list, search, filter, upload and toggle permissions with the API's rules."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from models_app.models import HostedModel

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/models_app/hostedmodel/"


def test_the_list_shows_every_model_with_its_permissions(admin_client, serve, mlp_jit, mlp_plan):
    serve("alpha", mlp_jit, allow_download=True)
    serve("beta", mlp_plan)

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    page = response.content.decode()
    assert "alpha" in page
    assert "beta" in page
    assert "TorchScript (jit)" in page
    assert "torch.export (plan)" in page


def test_search_and_filter(admin_client, serve, mlp_jit):
    serve("findme", mlp_jit, allow_download=True)
    serve("other", mlp_jit)

    found = admin_client.get(CHANGELIST, {"q": "findme"}).context["cl"].result_list
    assert [m.model_id for m in found] == ["findme"]
    filtered = admin_client.get(CHANGELIST, {"allow_download__exact": "0"}).context["cl"].result_list
    assert [m.model_id for m in filtered] == ["other"]


def test_toggling_permissions_from_the_list_applies_to_the_api(admin_client, api, serve, mlp_jit):
    serve("toggle", mlp_jit, allow_remote_inference=True)
    hosted = HostedModel.objects.get(model_id="toggle")
    assert api.post("/model/toggle", {"data": [[0.0] * 4]}, format="json").status_code == 200

    response = admin_client.post(
        CHANGELIST,
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": str(hosted.pk),
            "form-0-allow_download": "on",
            # allow_remote_inference left unchecked: switched off
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    hosted.refresh_from_db()
    assert (hosted.allow_download, hosted.allow_remote_inference) == (True, False)
    assert api.post("/model/toggle", {"data": [[0.0] * 4]}, format="json").status_code == 403
    assert api.get("/is_model_copy_allowed/toggle").status_code == 200


def test_uploading_from_the_admin_stores_a_checked_model(admin_client, mlp_plan):
    response = admin_client.post(
        f"{CHANGELIST}add/",
        {
            "model_id": "from-admin",
            "archive_file": SimpleUploadedFile("m.pt2", mlp_plan),
            "allow_remote_inference": "on",
        },
    )

    assert response.status_code == 302
    hosted = HostedModel.objects.get(model_id="from-admin")
    assert (hosted.kind, hosted.size, hosted.allow_remote_inference) == ("plan", len(mlp_plan), True)
    assert hosted.archive.read() == mlp_plan


@pytest.mark.parametrize(
    ("model_id", "archive", "message"),
    [
        ("bad id!", b"PK", "must be"),
        ("ok", b"not a model", "not a zip file"),
        ("taken", None, "already exists"),
    ],
)
def test_uploading_from_the_admin_refuses_what_the_api_refuses(
    admin_client, serve, mlp_jit, data_dir, model_id, archive, message
):
    serve("taken", mlp_jit)
    response = admin_client.post(
        f"{CHANGELIST}add/",
        {"model_id": model_id, "archive_file": SimpleUploadedFile("m.pt", archive or mlp_jit)},
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert list(HostedModel.objects.values_list("model_id", flat=True)) == ["taken"]
    assert list((data_dir / "tmp").iterdir()) == []


def test_the_change_page_edits_only_the_permissions(admin_client, serve, mlp_jit):
    serve("fixed", mlp_jit)
    hosted = HostedModel.objects.get(model_id="fixed")

    response = admin_client.post(
        f"{CHANGELIST}{hosted.pk}/change/",
        {"model_id": "renamed", "allow_download": "on", "sha256": "0" * 64},
    )

    assert response.status_code == 302
    hosted.refresh_from_db()
    assert (hosted.model_id, hosted.allow_download) == ("fixed", True)
    assert hosted.sha256 != "0" * 64


def test_the_admin_needs_a_staff_login(client):
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
