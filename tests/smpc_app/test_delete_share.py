"""DELETE /encrypted-models/<model_id>/share, and the share going with its registration: rows and files."""

import io

import pytest
from django.core.management import call_command
from django.db import transaction

from smpc_app.models import EncryptedModel, ModelShare
from smpc_app.shares import part_cache, share_load
from tests.smpc_app.conftest import stored_share_files

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/encrypted-models/gone/share", "/encrypted-models/gone/share/"])
def test_it_deletes_the_share_and_its_file(api, upload_share, data_dir, django_capture_on_commit_callbacks, path):
    upload_share("gone")
    name = ModelShare.objects.get().archive.name
    assert stored_share_files(data_dir) == [name.removeprefix("shares/")]

    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete(path)

    assert response.status_code == 204
    assert response.content == b""
    assert not ModelShare.objects.exists()
    assert stored_share_files(data_dir) == []
    # The registration stays, without a share.
    assert EncryptedModel.objects.get().model_id == "gone"
    assert api.get("/encrypted-models/gone").json()["share"] is None
    assert api.get("/encrypted-models/gone/share").status_code == 404


def test_it_forgets_the_loaded_part(api, upload_share, django_capture_on_commit_callbacks):
    upload_share("loaded", allow_remote_inference=True)
    share, _, _ = share_load(model_id="loaded", role="worker")
    assert ("loaded", share.archive.name) in part_cache

    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete("/encrypted-models/loaded/share").status_code == 204

    assert len(part_cache) == 0


def test_a_share_can_be_uploaded_again_after_its_deletion(
    api, upload_share, data_dir, django_capture_on_commit_callbacks
):
    upload_share("again", "worker", 0)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete("/encrypted-models/again/share").status_code == 204

    upload_share("again", "crypto_provider", None, registered=True)

    share = ModelShare.objects.get()
    assert (share.role, share.party) == ("crypto_provider", None)
    assert stored_share_files(data_dir) == [share.archive.name.removeprefix("shares/")]


def test_a_rolled_back_delete_keeps_the_file(upload_share, data_dir, django_capture_on_commit_callbacks):
    upload_share("kept")
    files = stored_share_files(data_dir)

    def delete_then_fail():
        with transaction.atomic():
            ModelShare.objects.all().delete()
            raise RuntimeError("rolled back")

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):
        delete_then_fail()

    assert callbacks == []
    assert ModelShare.objects.count() == 1
    assert stored_share_files(data_dir) == files


def test_it_answers_404_without_a_share(api, register):
    register("bare")
    response = api.delete("/encrypted-models/bare/share")
    assert response.status_code == 404
    assert response.json() == {"error": "This node holds no share of this encrypted model."}
    assert EncryptedModel.objects.count() == 1


def test_it_answers_404_for_an_unknown_model(api, upload_share, data_dir):
    upload_share("kept")
    response = api.delete("/encrypted-models/unknown/share")
    assert response.status_code == 404
    assert response.json() == {"error": "Encrypted model not found."}
    assert ModelShare.objects.count() == 1
    assert len(stored_share_files(data_dir)) == 1


def test_a_second_delete_answers_404(api, upload_share):
    upload_share("once")
    assert api.delete("/encrypted-models/once/share").status_code == 204
    response = api.delete("/encrypted-models/once/share")
    assert response.status_code == 404
    assert response.json() == {"error": "This node holds no share of this encrypted model."}


def test_it_answers_400_for_an_id_outside_the_rules(api, upload_share):
    upload_share("kept")
    response = api.delete("/encrypted-models/../share")
    assert response.status_code == 400
    assert "'model_id'" in response.json()["error"]
    assert ModelShare.objects.count() == 1


def test_it_answers_401_without_a_token_when_writes_are_closed(api, upload_share, settings):
    upload_share("closed")
    settings.GRIDNODE_AUTH_WRITE = True
    response = api.delete("/encrypted-models/closed/share")
    assert response.status_code == 401
    assert ModelShare.objects.count() == 1


def test_deleting_the_registration_deletes_its_share_and_file(
    api, upload_share, data_dir, django_capture_on_commit_callbacks
):
    upload_share("whole", "worker", 1)
    upload_share("other", "worker", 0)
    kept = ModelShare.objects.get(registration__model_id="other").archive.name

    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete("/encrypted-models/whole")

    assert response.status_code == 204
    assert list(EncryptedModel.objects.values_list("model_id", flat=True)) == ["other"]
    assert list(ModelShare.objects.values_list("registration__model_id", flat=True)) == ["other"]
    assert stored_share_files(data_dir) == [kept.removeprefix("shares/")]


def test_the_file_goes_only_once_the_deletion_commits(api, upload_share, data_dir, django_capture_on_commit_callbacks):
    upload_share("pending")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert api.delete("/encrypted-models/pending/share").status_code == 204
        # Not committed yet: the file is still there.
        assert len(stored_share_files(data_dir)) == 1

    assert len(callbacks) == 1
    callbacks[0]()
    assert stored_share_files(data_dir) == []


def test_storage_check_counts_a_share_file_as_claimed(upload_share, data_dir):
    """`manage.py storage_check --delete` removes files no row claims: never a stored share."""
    upload_share("claimed")
    out = io.StringIO()

    call_command("storage_check", "--delete", "--min-age", "0", stdout=out)

    assert "0 orphan files removed" in out.getvalue()
    assert stored_share_files(data_dir) == [ModelShare.objects.get().archive.name.removeprefix("shares/")]
