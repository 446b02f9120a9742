"""GridNodeClient.serve_model: every kind of model it takes, the flags, and the node's refusals."""

import pytest
import torch

from gridclient import GridNodeClient, InvalidRequest, ModelExists, ModelNotScriptable, PayloadTooLarge
from models_app.models import HostedModel
from tests.conftest import jit_bytes, small_mlp

pytestmark = pytest.mark.django_db(transaction=True)


class Unscriptable(torch.nn.Module):
    """A module TorchScript cannot compile (it calls a Python function that is not scriptable)."""

    def forward(self, x):
        return torch.tensor(sorted(x.tolist(), key=lambda row: sum(row)))


def hosted(model_id: str) -> HostedModel:
    return HostedModel.objects.get(model_id=model_id)


def test_it_scripts_an_nn_module(client):
    message = client.serve_model(small_mlp(), "mlp", allow_remote_inference=True)

    assert message == "Model saved with id: mlp"
    stored = hosted("mlp")
    assert stored.kind == "jit"
    assert (stored.allow_download, stored.allow_remote_inference) == (False, True)


def test_it_sends_a_script_module(client):
    client.serve_model(torch.jit.script(small_mlp()), "scripted", allow_download=True)

    stored = hosted("scripted")
    assert stored.kind == "jit"
    assert (stored.allow_download, stored.allow_remote_inference) == (True, False)


def test_it_sends_an_exported_program(client):
    program = torch.export.export(small_mlp(), (torch.rand(2, 4),))

    client.serve_model(program, "plan")

    assert hosted("plan").kind == "plan"


def test_it_sends_an_archive_by_path_and_by_bytes(client, tmp_path):
    archive = jit_bytes(small_mlp())
    path = tmp_path / "model.pt"
    path.write_bytes(archive)

    client.serve_model(path, "from-path")
    client.serve_model(str(path), "from-str")
    client.serve_model(archive, "from-bytes")

    assert {hosted(name).size for name in ("from-path", "from-str", "from-bytes")} == {len(archive)}


def test_it_refuses_a_module_torchscript_cannot_compile_and_sends_nothing(client):
    with pytest.raises(ModelNotScriptable, match="torch.jit.script cannot compile Unscriptable"):
        client.serve_model(Unscriptable(), "nope")

    assert not HostedModel.objects.exists()


def test_it_refuses_other_objects(client):
    with pytest.raises(TypeError, match="not dict"):
        client.serve_model({"weights": 1}, "nope")


def test_it_raises_model_exists_for_a_taken_id(client):
    client.serve_model(small_mlp(), "mlp")

    with pytest.raises(ModelExists) as caught:
        client.serve_model(small_mlp(), "mlp")

    assert caught.value.status == 409
    assert caught.value.message == "Model with id: mlp already exists."
    assert HostedModel.objects.count() == 1


def test_it_raises_invalid_request_for_bytes_that_are_not_a_model(client):
    with pytest.raises(InvalidRequest) as caught:
        client.serve_model(b"not a zip file", "junk")

    assert caught.value.status == 400
    assert "not a zip file" in caught.value.message
    assert not HostedModel.objects.exists()


def test_it_raises_invalid_request_for_a_bad_id(client):
    with pytest.raises(InvalidRequest, match="'model_id' must be"):
        client.serve_model(small_mlp(), "no spaces allowed")


def test_it_raises_payload_too_large_over_the_node_limit(client, settings):
    settings.GRIDNODE_MAX_MODEL_BYTES = 1024

    with pytest.raises(PayloadTooLarge) as caught:
        client.serve_model(small_mlp(), "big")

    assert caught.value.status == 413
    assert not HostedModel.objects.exists()


def test_it_reads_the_early_answer_when_the_node_refuses_the_body_unread(client, settings, tmp_path):
    # The node refuses from Content-Length before reading a byte of the 8 MiB body.
    settings.GRIDNODE_MAX_UPLOAD_BYTES = 1024
    path = tmp_path / "big.pt"
    path.write_bytes(bytes(8 * 1024 * 1024))

    with pytest.raises(PayloadTooLarge, match="larger than this node accepts"):
        client.serve_model(path, "big")


def test_it_reports_a_missing_file_before_connecting(closed_port_url, tmp_path):
    with pytest.raises(FileNotFoundError):
        GridNodeClient(closed_port_url).serve_model(tmp_path / "missing.pt", "x")
