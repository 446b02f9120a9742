"""GET /readyz: the readiness probe; 503 naming the failed check when the node cannot work."""

import pytest

pytestmark = pytest.mark.django_db


def test_it_is_200_when_the_database_answers_and_storage_takes_a_write(api, data_dir):
    response = api.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}
    assert list((data_dir / "files").iterdir()) == []


def test_it_is_503_naming_storage_when_it_cannot_be_written(api, settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    settings.MEDIA_ROOT = blocker / "files"

    response = api.get("/readyz/")

    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "checks": {"database": "ok", "storage": "failed"},
        "error": "Not ready: the storage is not writable.",
    }
