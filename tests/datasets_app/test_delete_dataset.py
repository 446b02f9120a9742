"""DELETE /datasets/<id>: the row, its tag links and its file go; unknown ids are 404."""

import pytest
from django.db import transaction

from datasets_app.models import Dataset, Tag
from tests.api_cases import DeleteCases, PathIdRuleCases, UnknownIdCases
from tests.datasets_app.helpers import DatasetCases


@pytest.mark.django_db
class TestIdCases(DatasetCases, DeleteCases, UnknownIdCases, PathIdRuleCases):
    method = "delete"
    path = "/datasets/{id}"
    spellings = ("/datasets/{id}", "/datasets/{id}/")
    effect = "deletes"
    ok_status = 204
    lookup_path = "/datasets/{id}"


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
