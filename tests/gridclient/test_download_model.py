"""GridNodeClient.download_model and download_archive: the loaded model, the exact bytes, the refusals."""

import pytest
import torch

from gridclient import ModelNotFound, PermissionDenied
from models_app.models import HostedModel
from tests.conftest import small_mlp

pytestmark = pytest.mark.django_db(transaction=True)

X = torch.rand(2, 4)


def test_it_loads_a_torchscript_model(client, mlp):
    model = client.download_model("mlp")

    assert isinstance(model, torch.jit.ScriptModule)
    with torch.no_grad():
        assert torch.allclose(model(X), mlp(X))


def test_it_loads_an_exported_program(client):
    module = small_mlp()
    client.serve_model(torch.export.export(module, (X,)), "plan", allow_download=True)

    program = client.download_model("plan")

    assert isinstance(program, torch.export.ExportedProgram)
    with torch.no_grad():
        assert torch.allclose(program.module()(X), module(X))


def test_it_writes_exactly_the_uploaded_bytes(client, mlp, tmp_path):
    target = tmp_path / "copy.pt"

    size = client.download_archive("mlp", target)

    stored = HostedModel.objects.get(model_id="mlp")
    assert size == stored.size == target.stat().st_size
    with stored.archive.open("rb") as original:
        assert target.read_bytes() == original.read()
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".part")] == []


def test_it_raises_permission_denied_and_leaves_no_file(client, tmp_path):
    client.serve_model(small_mlp(), "private")
    target = tmp_path / "copy.pt"

    with pytest.raises(PermissionDenied) as caught:
        client.download_archive("private", target)

    assert caught.value.status == 403
    assert caught.value.message == "You're not allowed to download this model."
    assert list(tmp_path.glob("*copy.pt*")) == []


def test_it_raises_model_not_found(client):
    with pytest.raises(ModelNotFound):
        client.download_model("ghost")
