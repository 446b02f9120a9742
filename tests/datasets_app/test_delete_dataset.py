"""DELETE /datasets/<id>: the row, its tag links and its file go; unknown ids are 404."""

import pytest
from django.db import transaction

from datasets_app.models import Dataset, Tag
from tests.datasets_app.helpers import stored_files


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/datasets/gone", "/datasets/gone/"])
def test_it_deletes_the_dataset_and_its_file(api, upload, data_dir, path):
    upload("gone", tags=["#a", "#shared"])
    upload("kept", tags=["#shared"])
    stored = data_dir / "files" / Dataset.objects.get(dataset_id="gone").data.name
    assert stored.exists()

    response = api.delete(path)

    assert response.status_code == 204
    assert response.content == b""
    assert list(Dataset.objects.values_list("dataset_id", flat=True)) == ["kept"]
    assert not stored.exists()
    assert stored_files(data_dir) == [Dataset.objects.get().data.name.split("/")[-1]]
    assert Dataset.tags.through.objects.count() == 1
    assert api.get("/datasets/gone").status_code == 404


def delete_then_fail() -> None:
    with transaction.atomic():
        Dataset.objects.all().delete()
        raise RuntimeError("roll back")


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_delete_keeps_the_file(upload, data_dir):
    upload("kept")
    stored = data_dir / "files" / Dataset.objects.get().data.name
    with pytest.raises(RuntimeError):
        delete_then_fail()

    assert stored.exists()
    assert Dataset.objects.count() == 1


@pytest.mark.django_db
def test_tag_rows_stay_but_leave_the_dataset_tags_listing(api, upload):
    upload("only", tags=["#lonely"])

    assert api.delete("/datasets/only").status_code == 204

    assert Tag.objects.filter(name="#lonely").exists()
    assert api.get("/dataset-tags").json() == []


@pytest.mark.django_db
def test_an_unknown_dataset_is_404(api, upload):
    upload("kept")

    response = api.delete("/datasets/missing")

    assert response.status_code == 404
    assert response.json() == {"error": "Dataset not found."}
    assert Dataset.objects.count() == 1


@pytest.mark.django_db
def test_an_id_breaking_the_rules_is_400(api):
    response = api.delete("/datasets/..")
    assert response.status_code == 400
    assert "'id' must be" in response.json()["error"]
