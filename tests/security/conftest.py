"""What every hostile-input test checks: a JSON 4xx, nothing stored, and no code of the payload run."""

import base64
import io
import json
import zipfile

import pytest
import torch

from datasets_app.models import Dataset, Tag
from models_app.models import HostedModel
from smpc_app.models import EncryptedModel, WorkerNode


class WritesCanary:
    """Unpickling this creates a file: proof that the payload's code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def canary(tmp_path):
    """Where a payload would leave its mark; the test asserts it never exists."""
    return tmp_path / "canary"


def assert_refused(response, status: int = 400) -> str:
    """The response is a JSON error with this status; returns its message."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("error"), str)
    assert body["error"]
    return body["error"]


def stored_files(data_dir) -> list[str]:
    """Every file in storage, relative to it."""
    root = data_dir / "files"
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()) if root.exists() else []


def staged_files(data_dir) -> list[str]:
    """Whatever is left in the upload staging folder."""
    return sorted(path.name for path in (data_dir / "tmp").iterdir())


def assert_nothing_stored(data_dir) -> None:
    """No row in any table a request can write, no stored file, nothing left in the staging folder."""
    assert HostedModel.objects.count() == 0
    assert Dataset.objects.count() == 0
    assert Tag.objects.count() == 0
    assert EncryptedModel.objects.count() == 0
    assert WorkerNode.objects.count() == 0
    assert stored_files(data_dir) == []
    assert staged_files(data_dir) == []


def stored_state(data_dir) -> dict:
    """Rows per table, stored files and staged files: compared before and after a refused request."""
    return {
        "models": sorted(HostedModel.objects.values_list("model_id", flat=True)),
        "datasets": sorted(Dataset.objects.values_list("dataset_id", flat=True)),
        "tags": Tag.objects.count(),
        "encrypted_models": EncryptedModel.objects.count(),
        "worker_nodes": WorkerNode.objects.count(),
        "files": stored_files(data_dir),
        "staged": staged_files(data_dir),
    }


@pytest.fixture
def hosted(serve, mlp_jit):
    """One model ("mlp", inference and download allowed), so requests reach the parsing of their bodies."""
    serve("mlp", mlp_jit, allow_remote_inference=True, allow_download=True)
    return "mlp"


def through_the_wsgi_stack(method: str, path: str, body: bytes, content_type: str) -> tuple[int, str, dict]:
    """One request through what gunicorn serves (the inference fast path, WholeBodies, Django): the test
    client starts at Django and skips both. Returns (status, content type, JSON body)."""
    from gridnode.wsgi import application
    from tests.wsgi import call_wsgi

    status, headers, content = call_wsgi(application, method, path, body, content_type)
    return status, headers.get("content-type", ""), json.loads(content)


def upload_model(api, archive: bytes, model_id: str = "hostile", **fields):
    """POST /serve-model with the archive as base64 text in JSON."""
    body = {"model_id": model_id, "encoding": "base64", "model": base64.b64encode(archive).decode(), **fields}
    return api.post("/serve-model", body, format="json")


def torch_saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def zip_entries(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        return {name: source.read(name) for name in source.namelist()}


def zip_of(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def entry_name(entries, suffix: str) -> str:
    return next(name for name in entries if name.endswith(suffix))
