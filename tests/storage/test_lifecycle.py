"""The stored-file lifecycle (gridnode/storedfiles.py) on a real object store (SeaweedFS's S3 gateway):
models and datasets uploaded, read back, run and deleted, storage_check, /readyz, failed uploads, and each
replica's checked local copies of archives (gridnode/objectstore.py)."""

import hashlib
import io
import os
import subprocess
import sys

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from datasets_app.models import Dataset
from gridnode.objectstore import copies_folder, copy_path, local_copies
from models_app.models import HostedModel
from tests.conftest import jit_bytes
from tests.storage.conftest import storage_options

pytestmark = pytest.mark.django_db(transaction=True)  # deletions remove files once they commit


def wide_jit() -> bytes:
    """A TorchScript model of about 10 MiB: past the 8 MiB part size, so stored as a multipart upload."""
    torch.manual_seed(1)
    return jit_bytes(torch.nn.Sequential(torch.nn.Linear(1600, 1600), torch.nn.ReLU(), torch.nn.Linear(1600, 2)).eval())


def serve(api, model_id: str, archive: bytes, **flags):
    upload = SimpleUploadedFile("model.pt", archive, content_type="application/octet-stream")
    body = {"model_id": model_id, "model": upload, "allow_download": "true", "allow_remote_inference": "true"}
    return api.post("/serve-model", {**body, **flags}, format="multipart")


def infer(api, model_id: str, rows):
    return api.post(f"/model/{model_id}", {"data": rows}, format="json")


def test_a_model_is_stored_read_run_and_deleted_on_the_object_store(api, object_store, on_s3, data_dir):
    archive = wide_jit()
    response = serve(api, "wide", archive)
    assert response.status_code == 200, response.content

    hosted = HostedModel.objects.get(model_id="wide")
    assert object_store.keys(on_s3) == [f"{on_s3}/{hosted.archive.name}"]
    assert object_store.pending_uploads(on_s3) == []
    assert not (data_dir / "files").exists()  # nothing on the local disk's storage
    assert list((data_dir / "tmp").iterdir()) == []  # nor left staged
    assert hosted.sha256 == hashlib.sha256(archive).hexdigest()

    raw = api.get("/get_model/wide", HTTP_ACCEPT="application/octet-stream")
    assert raw.status_code == 200
    assert raw["Content-Length"] == str(len(archive))
    assert b"".join(raw.streaming_content) == archive
    as_text = api.get("/get_model/wide")
    assert as_text.json()["serialized_model"].encode("latin-1") == archive

    rows = torch.rand(3, 1600).tolist()
    first = infer(api, "wide", rows)
    assert first.status_code == 200, first.content
    (copy,) = local_copies()
    assert copy.name == f"{hosted.sha256}-{hosted.archive.name.replace('/', '-')}"
    assert copy.read_bytes() == archive
    assert infer(api, "wide", rows).json() == first.json()

    assert api.post("/delete-model", {"model_id": "wide"}, format="json").status_code == 200
    assert object_store.keys(on_s3) == []
    assert local_copies() == []
    assert api.get("/get_model/wide").status_code == 404
    assert infer(api, "wide", rows).status_code == 404


def test_a_dataset_is_stored_read_and_deleted_on_the_object_store(api, object_store, on_s3):
    body = {"id": "points", "tags": ["#a"], "data": [[1.0, 2.0], [3.0, 4.0]], "allow_download": True}
    assert api.post("/datasets", body, format="json").status_code == 201
    dataset = Dataset.objects.get(dataset_id="points")
    assert object_store.keys(on_s3) == [f"{on_s3}/{dataset.data.name}"]

    as_json = api.get("/datasets/points/data?format=json")
    assert as_json.status_code == 200, as_json.content
    assert as_json.json()["data"] == [[1.0, 2.0], [3.0, 4.0]]
    encoded = api.get("/datasets/points/data?encoding=base64").json()
    assert encoded["encoding"] == "base64"

    assert api.delete("/datasets/points").status_code == 204
    assert object_store.keys(on_s3) == []
    assert api.get("/datasets/points/data").status_code == 404


def test_a_multipart_upload_failing_half_way_leaves_no_object_no_part_and_no_row(api, object_store, on_s3):
    from django.core.files.storage import default_storage

    calls = []

    def fail_the_second_part(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise ConnectionError("the object store went away")

    events = default_storage.client.meta.events
    events.register("before-call.s3.UploadPart", fail_the_second_part, unique_id="cut")
    try:
        response = serve(api, "cut", wide_jit())
    finally:
        events.unregister("before-call.s3.UploadPart", unique_id="cut")

    assert len(calls) >= 2  # it was a multipart upload, cut after its first part
    assert response.status_code == 503
    assert response.json()["error"] == (
        "The object store did not take the file, so nothing was stored; try again later."
    )
    assert not HostedModel.objects.exists()
    assert object_store.keys(on_s3) == []
    assert object_store.pending_uploads(on_s3) == []


def test_readyz_checks_the_object_store(api, settings, object_store, on_s3):
    assert api.get("/readyz").json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}
    assert object_store.keys(on_s3) == []  # the probe's object is gone

    settings.STORAGES = {
        **settings.STORAGES,
        "default": storage_options(object_store, on_s3, secret_key="not-the-secret"),
    }
    refused = api.get("/readyz")
    assert refused.status_code == 503
    assert refused.json()["checks"] == {"database": "ok", "storage": "failed"}


def test_storage_check_finds_and_removes_what_no_row_claims_on_the_object_store(
    api, object_store, on_s3, mlp_jit, data_dir
):
    from django.core.files.storage import default_storage

    assert serve(api, "kept", mlp_jit).status_code == 200
    assert infer(api, "kept", [[1, 2, 3, 4]]).status_code == 200
    kept = HostedModel.objects.get(model_id="kept")
    client, bucket = object_store.client(), object_store.bucket
    client.put_object(Bucket=bucket, Key=f"{on_s3}/models/orphan.pt", Body=b"left behind")
    client.create_multipart_upload(Bucket=bucket, Key=f"{on_s3}/models/killed.pt")
    (copies_folder() / f"{'0' * 64}-models-deleted-elsewhere.pt").write_bytes(b"an old copy")
    (copies_folder() / ".fetch-killed").write_bytes(b"half a copy")  # its process was killed mid-fetch

    out = io.StringIO()
    with pytest.raises(CommandError, match="4 problems"):
        call_command("storage_check", "--min-age", "0", stdout=out)
    report = out.getvalue()
    assert "Orphan file models/orphan.pt" in report
    assert f"Unfinished multipart upload of {on_s3}/models/killed.pt" in report
    assert "models-deleted-elsewhere.pt" in report
    assert ".fetch-killed (11 bytes): a fetch that never finished" in report
    assert "1 unfinished multipart uploads found, 2 local copies of files no row refers to found" in report

    out = io.StringIO()
    call_command("storage_check", "--min-age", "0", "--delete", stdout=out)
    assert object_store.keys(on_s3) == [f"{on_s3}/{kept.archive.name}"]
    assert object_store.pending_uploads(on_s3) == []
    assert [path.name for path in local_copies()] == [f"{kept.sha256}-{kept.archive.name.replace('/', '-')}"]
    assert not (copies_folder() / ".fetch-killed").exists()
    assert default_storage.exists(kept.archive.name)
    call_command("storage_check", "--min-age", "0", stdout=io.StringIO())  # nothing left to find


def test_a_damaged_local_copy_is_removed_and_fetched_again(api, on_s3, mlp_jit):
    assert serve(api, "mlp", mlp_jit).status_code == 200
    hosted = HostedModel.objects.get(model_id="mlp")
    # A copy this replica holds whose bytes changed on its disk since it was fetched and checked.
    copy = copy_path(hosted.archive.name, hosted.sha256)
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"x" * len(mlp_jit))

    refused = infer(api, "mlp", [[1, 2, 3, 4]])
    assert refused.status_code == 503
    assert "fetched again" in refused.json()["error"]
    assert not copy.exists()

    answered = infer(api, "mlp", [[1, 2, 3, 4]])
    assert answered.status_code == 200, answered.content
    assert copy.read_bytes() == mlp_jit


def test_an_archive_changed_in_the_store_is_refused_by_a_replica_without_a_copy(api, object_store, on_s3, mlp_jit):
    assert serve(api, "mlp", mlp_jit).status_code == 200
    hosted = HostedModel.objects.get(model_id="mlp")
    tampered = bytearray(mlp_jit)
    tampered[-100] ^= 0xFF
    object_store.client().put_object(
        Bucket=object_store.bucket, Key=f"{on_s3}/{hosted.archive.name}", Body=bytes(tampered)
    )

    refused = infer(api, "mlp", [[1, 2, 3, 4]])
    assert refused.status_code == 500
    assert "does not match the sha256" in refused.json()["error"]
    assert local_copies() == []


def test_settings_refuse_an_incomplete_object_store_configuration(tmp_path):
    from django.conf import settings as django_settings

    def start(**variables):
        env = {**os.environ, "GRIDNODE_DATA_DIR": str(tmp_path), **variables}
        command = [sys.executable, "-c", "import django; django.setup()"]
        env["DJANGO_SETTINGS_MODULE"] = "gridnode.settings"
        return subprocess.run(command, cwd=django_settings.BASE_DIR, env=env, capture_output=True, text=True)

    assert "GRIDNODE_S3_BUCKET" in start(GRIDNODE_STORAGE="s3").stderr
    assert "local (the default) or s3" in start(GRIDNODE_STORAGE="nfs").stderr
    half = start(GRIDNODE_STORAGE="s3", GRIDNODE_S3_BUCKET="b", GRIDNODE_S3_ACCESS_KEY_ID="k")
    assert "GRIDNODE_S3_SECRET_ACCESS_KEY" in half.stderr
    assert start(GRIDNODE_STORAGE="s3", GRIDNODE_S3_BUCKET="b").returncode == 0


def test_a_store_that_does_not_answer_is_a_503_and_a_deletion_still_happens(
    api, settings, object_store, on_s3, mlp_jit
):
    import socket

    assert serve(api, "kept", mlp_jit).status_code == 200
    hosted = HostedModel.objects.get(model_id="kept")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    settings.STORAGES = {**settings.STORAGES, "default": storage_options(object_store, on_s3, endpoint_url=dead)}

    gone = {"error": "The object store did not answer; try again later."}
    download = api.get("/get_model/kept", HTTP_ACCEPT="application/octet-stream")
    assert (download.status_code, download.json()) == (503, {"success": False, **gone})
    inference = infer(api, "kept", [[1, 2, 3, 4]])
    assert inference.status_code == 503
    assert inference.json()["error"] == gone["error"]
    upload = serve(api, "new", mlp_jit)
    assert upload.status_code == 503
    assert "nothing was stored" in upload.json()["error"]
    assert api.get("/readyz").status_code == 503
    # The row goes; its object stays behind for storage_check, which finds it once the store answers.
    assert api.post("/delete-model", {"model_id": "kept"}, format="json").status_code == 200
    assert not HostedModel.objects.exists()

    settings.STORAGES = {**settings.STORAGES, "default": storage_options(object_store, on_s3)}
    assert object_store.keys(on_s3) == [f"{on_s3}/{hosted.archive.name}"]
    out = io.StringIO()
    call_command("storage_check", "--min-age", "0", "--delete", stdout=out)
    assert f"Orphan file {hosted.archive.name}" in out.getvalue()
    assert object_store.keys(on_s3) == []
