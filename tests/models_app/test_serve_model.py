"""POST /serve-model: every body form, both kinds, and every refusal leaving nothing behind."""

import base64
import functools
import hashlib
import io
import zipfile

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile

from models_app.models import HostedModel
from tests.api_cases import BodyIdRuleCases, RequiredIdCases, with_id
from tests.conftest import jit_bytes, small_mlp
from tests.models_app.helpers import HostedModelCases

pytestmark = pytest.mark.django_db


def stored_files(data_dir):
    folder = data_dir / "files" / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def staged_files(data_dir):
    return sorted(p.name for p in (data_dir / "tmp").iterdir())


def test_it_stores_a_jit_model_sent_as_latin1_json(api, mlp_jit, data_dir):
    body = {"model_id": "mlp", "encoding": "ISO-8859-1", "model": mlp_jit.decode("latin-1"), "allow_download": True}
    response = api.post("/serve-model", body, format="json")

    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Model saved with id: mlp"}
    hosted = HostedModel.objects.get(model_id="mlp")
    assert hosted.kind == "jit"
    assert hosted.size == len(mlp_jit)
    assert hosted.sha256 == hashlib.sha256(mlp_jit).hexdigest()
    assert hosted.allow_download is True
    assert hosted.allow_remote_inference is False
    assert hosted.archive.read() == mlp_jit
    assert stored_files(data_dir) == [hosted.archive.name.split("/")[-1]]
    assert staged_files(data_dir) == []


def test_it_stores_a_plan_model_sent_as_base64(api, mlp_plan):
    body = {"model_id": "plan-1", "encoding": "base64", "model": base64.b64encode(mlp_plan).decode()}
    response = api.post("/serve-model/", body, format="json")

    assert response.status_code == 200
    hosted = HostedModel.objects.get(model_id="plan-1")
    assert hosted.kind == "plan"
    assert hosted.archive.name.endswith(".pt2")


def test_it_accepts_a_multipart_file_part(api, mlp_plan, data_dir):
    upload = SimpleUploadedFile("model.pt2", mlp_plan, content_type="application/octet-stream")
    body = {"model_id": "multi", "model": upload, "allow_remote_inference": "True", "allow_download": "False"}
    response = api.post("/serve-model", body, format="multipart")

    assert response.status_code == 200
    hosted = HostedModel.objects.get(model_id="multi")
    assert (hosted.kind, hosted.allow_remote_inference, hosted.allow_download) == ("plan", True, False)
    assert staged_files(data_dir) == []


def test_it_streams_a_large_multipart_upload_through_disk(api, settings, mlp_jit, data_dir):
    # Past this size Django writes the part to a temp file; the node moves that file into storage.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    upload = SimpleUploadedFile("model.pt", mlp_jit)
    response = api.post("/serve-model", {"model_id": "big", "model": upload}, format="multipart")

    assert response.status_code == 200
    assert HostedModel.objects.get(model_id="big").archive.read() == mlp_jit
    assert staged_files(data_dir) == []


def test_it_accepts_a_form_encoded_body(api, mlp_jit):
    body = {"model_id": "form", "encoding": "latin1", "model": mlp_jit.decode("latin-1"), "allow_download": "1"}
    response = api.post("/serve-model", body)  # APIClient's default: multipart text fields
    assert response.status_code == 200

    from urllib.parse import urlencode

    encoded = urlencode({**body, "model_id": "form2", "allow_remote_inference": "true"})
    response = api.post("/serve-model", encoded, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert HostedModel.objects.get(model_id="form2").allow_remote_inference is True


def test_it_refuses_a_duplicate_id_and_keeps_the_first_model(api, serve, mlp_jit, mlp_plan, data_dir):
    serve("dup", mlp_jit)
    before = stored_files(data_dir)
    body = {"model_id": "dup", "encoding": "base64", "model": base64.b64encode(mlp_plan).decode()}
    response = api.post("/serve-model", body, format="json")

    assert response.status_code == 409
    assert response.json() == {"success": False, "error": "Model with id: dup already exists."}
    hosted = HostedModel.objects.get(model_id="dup")
    assert hosted.kind == "jit"
    assert hosted.archive.read() == mlp_jit
    assert stored_files(data_dir) == before


@functools.cache
def reference_archive() -> bytes:
    return jit_bytes(small_mlp())


class TestIdCases(HostedModelCases, BodyIdRuleCases, RequiredIdCases):
    """The id rule on upload: a refused id stores no row and no file, and leaves nothing staged."""

    method = "post"
    path = "/serve-model"
    effect = "creates"

    def body(self, object_id):
        body = {"encoding": "ISO-8859-1", "model": reference_archive().decode("latin-1")}
        return with_id(body, "model_id", object_id)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": None}, "'model' is required."),
        ({"encoding": None}, "needs an 'encoding'"),
        ({"encoding": "rot13"}, "Unknown encoding"),
        ({"encoding": "json"}, "Unknown encoding"),
        ({"allow_download": "yes"}, "'allow_download' must be true or false."),
        ({"allow_remote_inference": 1}, "'allow_remote_inference' must be true or false."),
        ({"model_type": "onnx"}, "'model_type' must be jit or plan."),
        ({"model_type": "plan"}, "'model_type' says plan but the archive is a jit archive."),
        ({"model": ["not", "text"]}, "'model' must be text"),
        ({"model": "\u0394 not latin-1"}, "outside ISO-8859-1"),
        ({"encoding": "base64", "model": "***"}, "not valid base64"),
        ({"model": "just some text"}, "not a zip file"),
    ],
)
def test_it_refuses_bad_fields_and_stores_nothing(api, mlp_jit, data_dir, change, message):
    body = {"model_id": "m1", "encoding": "ISO-8859-1", "model": mlp_jit.decode("latin-1"), **change}
    body = {key: value for key, value in body.items() if value is not None}
    response = api.post("/serve-model", body, format="json")

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert HostedModel.objects.count() == 0
    assert stored_files(data_dir) == []
    assert staged_files(data_dir) == []


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "archive",
    [
        zip_of({"archive/readme.txt": b"hello"}),
        zip_of({"a/data.pkl": b"x", "b/constants.pkl": b"y"}),
        b"",
    ],
    ids=["unrelated-zip", "two-roots", "empty"],
)
def test_it_refuses_a_zip_that_is_neither_kind(api, archive, data_dir):
    body = {"model_id": "z", "encoding": "base64", "model": base64.b64encode(archive).decode() or "AA=="}
    response = api.post("/serve-model", body, format="json")

    assert response.status_code == 400
    assert "error" in response.json()
    assert HostedModel.objects.count() == 0
    assert staged_files(data_dir) == []


def test_it_refuses_a_torch_save_checkpoint(api, data_dir):
    # A pickled nn.Module (torch.save) is a zip too, but not an archive the node will ever unpickle.
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buffer)
    body = {"model_id": "ckpt", "encoding": "base64", "model": base64.b64encode(buffer.getvalue()).decode()}
    response = api.post("/serve-model", body, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": "The zip file is neither a TorchScript archive nor a torch.export archive.",
    }
    assert HostedModel.objects.count() == 0


def test_it_refuses_a_corrupt_jit_archive(api, mlp_jit, data_dir):
    with zipfile.ZipFile(io.BytesIO(mlp_jit)) as source:
        entries = {name: source.read(name) for name in source.namelist()}
    code = next(name for name in entries if name.endswith("container.py"))
    entries[code] = b"this is not torchscript ((("
    body = {"model_id": "broken", "encoding": "base64", "model": base64.b64encode(zip_of(entries)).decode()}
    response = api.post("/serve-model", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"].startswith("The TorchScript archive does not load")
    assert HostedModel.objects.count() == 0
    assert stored_files(data_dir) == []
    assert staged_files(data_dir) == []


def test_it_answers_413_for_a_model_over_the_limit(api, settings, mlp_jit, data_dir):
    settings.GRIDNODE_MAX_MODEL_BYTES = 1024
    body = {"model_id": "huge", "encoding": "ISO-8859-1", "model": mlp_jit.decode("latin-1")}
    response = api.post("/serve-model", body, format="json")

    assert response.status_code == 413
    assert "larger than this node accepts" in response.json()["error"]
    assert HostedModel.objects.count() == 0
    assert staged_files(data_dir) == []


def test_it_answers_413_for_a_body_over_the_limit(api, settings, mlp_jit):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = {"model_id": "huge", "encoding": "ISO-8859-1", "model": mlp_jit.decode("latin-1")}
    response = api.post("/serve-model", body, format="json")

    assert response.status_code == 413
    assert HostedModel.objects.count() == 0


def test_it_answers_400_for_a_body_that_is_not_json(api):
    response = api.post("/serve-model", b"{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": "The request body could not be parsed as its Content-Type says.",
    }


def test_it_answers_400_for_a_json_body_that_is_not_an_object(api):
    response = api.post("/serve-model", [1, 2], format="json")
    assert response.status_code == 400
    assert response.json() == {"success": False, "error": "The request body must be a JSON object or a form."}


def test_it_answers_415_for_an_unknown_content_type(api):
    response = api.post("/serve-model", b"model", content_type="text/plain")
    assert response.status_code == 415
    assert "Unsupported Content-Type" in response.json()["error"]


def test_it_answers_405_for_get(api):
    response = api.get("/serve-model")
    assert response.status_code == 405
    assert response.json() == {"success": False, "error": 'Method "GET" not allowed.'}


@pytest.mark.parametrize("kind", ["jit", "plan"])
def test_an_archive_is_checked_in_an_inference_process_not_this_one(api, mlp_jit, mlp_plan, data_dir, kind):
    archive = mlp_jit if kind == "jit" else mlp_plan
    upload = SimpleUploadedFile("model", archive)
    body = {"model_id": "large", "model": upload, "allow_remote_inference": "true"}
    response = api.post("/serve-model", body, format="multipart")

    assert response.status_code == 200
    assert HostedModel.objects.get(model_id="large").kind == kind
    answer = api.post("/model/large", {"data": [[0.0] * 4] * 2}, format="json")
    assert answer.status_code == 200
