"""The admin: operators list, search and add datasets, edit tags and toggle downloads, by the API's rules."""

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app.models import Dataset, Tag
from tests.datasets_app.helpers import saved, staged_files, stored_files

CHANGELIST = "/admin/datasets_app/dataset/"


@pytest.mark.django_db
def test_the_list_shows_datasets_with_their_tags(admin_client, upload):
    upload("alpha", tags=["#b", "#a"], description="first set")
    upload("beta")

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    page = response.content.decode()
    assert "alpha" in page
    assert "beta" in page
    assert "#a, #b" in page
    assert "first set" in page


@pytest.mark.django_db
def test_search_by_tag_id_and_description(admin_client, upload):
    upload("digits", tags=["#mnist", "#train"], description="handwritten digits")
    upload("colours", tags=["#cifar", "#train"], description="tiny images")

    def found(query: str) -> list[str]:
        return sorted(d.dataset_id for d in admin_client.get(CHANGELIST, {"q": query}).context["cl"].result_list)

    assert found("#mnist") == ["digits"]
    assert found("#train") == ["colours", "digits"]
    assert found("tiny") == ["colours"]
    assert found("colours") == ["colours"]


@pytest.mark.django_db
def test_toggling_allow_download_from_the_list_applies_to_the_api(admin_client, api, upload):
    upload("toggle")
    dataset = Dataset.objects.get()
    assert api.get("/datasets/toggle/data").status_code == 403

    response = admin_client.post(
        CHANGELIST,
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": str(dataset.pk),
            "form-0-allow_download": "on",
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    dataset.refresh_from_db()
    assert dataset.allow_download is True
    assert api.get("/datasets/toggle/data").status_code == 200


@pytest.mark.django_db
def test_the_change_page_edits_tags_description_and_permission_only(admin_client, api, upload):
    upload("fixed", tags=["#old", "#kept"], description="before")
    dataset = Dataset.objects.get()
    page = admin_client.get(f"{CHANGELIST}{dataset.pk}/change/").content.decode()
    assert "#kept\n#old" in page

    response = admin_client.post(
        f"{CHANGELIST}{dataset.pk}/change/",
        {
            "tag_lines": "#kept\r\n  #new  \r\n\r\n#日本語",
            "description": "after",
            "allow_download": "on",
            "dataset_id": "renamed",
            "sha256": "0" * 64,
        },
    )

    assert response.status_code == 302
    dataset.refresh_from_db()
    assert (dataset.dataset_id, dataset.description, dataset.allow_download) == ("fixed", "after", True)
    assert dataset.sha256 != "0" * 64
    assert dataset.tag_names() == ["#kept", "#new", "#日本語"]
    assert api.get("/dataset-tags").json() == ["#kept", "#new", "#日本語"]
    assert api.post("/search", {"query": ["#new", "after"]}, format="json").json() == {"content": True}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("#ok\n" + "x" * 101, "Tags are 1-100 characters long"),
        ("\n".join(f"#{n}" for n in range(101)), "at most 100 distinct tags"),
        ("#bell\x07", "control characters"),
    ],
)
def test_the_change_page_refuses_tags_the_api_refuses(admin_client, upload, lines, message):
    upload("strict", tags=["#before"])
    dataset = Dataset.objects.get()

    response = admin_client.post(f"{CHANGELIST}{dataset.pk}/change/", {"tag_lines": lines, "description": ""})

    assert response.status_code == 200
    assert message in response.content.decode()
    assert dataset.tag_names() == ["#before"]


@pytest.mark.django_db
def test_adding_from_the_admin_stores_a_checked_tensor(admin_client, data_dir):
    raw = saved(torch.arange(6).reshape(3, 2))
    response = admin_client.post(
        f"{CHANGELIST}add/",
        {
            "new_dataset_id": "from-admin",
            "tensor_file": SimpleUploadedFile("t.pt", raw),
            "tag_lines": "#b\n#a\n#a",
            "description": "uploaded by hand",
            "allow_download": "on",
        },
    )

    assert response.status_code == 302
    dataset = Dataset.objects.get(dataset_id="from-admin")
    assert (dataset.shape, dataset.dtype, dataset.size, dataset.allow_download) == ([3, 2], "int64", len(raw), True)
    assert dataset.tag_names() == ["#a", "#b"]
    assert dataset.data.read() == raw
    assert staged_files(data_dir) == []


@pytest.mark.django_db
def test_adding_without_an_id_makes_up_a_uuid(admin_client):
    response = admin_client.post(f"{CHANGELIST}add/", {"tensor_file": SimpleUploadedFile("t.pt", saved(torch.ones(1)))})

    assert response.status_code == 302
    assert len(Dataset.objects.get().dataset_id) == 36


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("dataset_id", "content", "message"),
    [
        ("bad id!", None, "must be 1-128 characters"),
        ("taken", None, "already exists"),
        ("ok", b"not a tensor", "not a tensor saved with torch.save"),
        ("ok", saved([torch.ones(1), torch.ones(1)]), "one tensor"),
    ],
)
def test_adding_refuses_what_the_api_refuses(admin_client, upload, data_dir, dataset_id, content, message):
    upload("taken")
    before = stored_files(data_dir)
    response = admin_client.post(
        f"{CHANGELIST}add/",
        {"new_dataset_id": dataset_id, "tensor_file": SimpleUploadedFile("t.pt", content or saved(torch.ones(1)))},
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert list(Dataset.objects.values_list("dataset_id", flat=True)) == ["taken"]
    assert stored_files(data_dir) == before
    assert staged_files(data_dir) == []


@pytest.mark.django_db(transaction=True)
def test_deleting_from_the_admin_removes_the_file(admin_client, upload, data_dir):
    upload("doomed")
    dataset = Dataset.objects.get()
    stored = data_dir / "files" / dataset.data.name

    response = admin_client.post(f"{CHANGELIST}{dataset.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Dataset.objects.exists()
    assert not stored.exists()


@pytest.mark.django_db(transaction=True)
def test_the_bulk_delete_action_removes_every_file(admin_client, upload, data_dir):
    upload("one")
    upload("two")
    pks = [str(pk) for pk in Dataset.objects.values_list("pk", flat=True)]

    response = admin_client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": pks, "post": "yes"})

    assert response.status_code == 302
    assert not Dataset.objects.exists()
    assert stored_files(data_dir) == []


@pytest.mark.django_db
def test_the_tag_list_counts_datasets_and_checks_names(admin_client, upload):
    upload("one", tags=["#shared", "#solo"])
    upload("two", tags=["#shared"])

    response = admin_client.get("/admin/datasets_app/tag/")
    assert response.status_code == 200
    counts = {tag.name: tag.dataset_count for tag in response.context["cl"].result_list}
    assert counts == {"#shared": 2, "#solo": 1}

    response = admin_client.post("/admin/datasets_app/tag/add/", {"name": "bad\ttag"})
    assert response.status_code == 200
    assert "control characters" in response.content.decode()
    assert not Tag.objects.filter(name="bad\ttag").exists()


@pytest.mark.django_db
def test_the_admin_needs_a_staff_login(client):
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
