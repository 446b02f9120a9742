"""GridNodeClient.run_inference (tensors, dtypes kept) and run_inference_json, and their refusals."""

import pytest
import torch

from gridclient import InvalidRequest, ModelNotFound, PermissionDenied
from tests.conftest import TwoInputs, small_mlp

pytestmark = pytest.mark.django_db(transaction=True)

X = torch.rand(2, 4)


def test_it_answers_the_models_output(client, mlp):
    prediction = client.run_inference("mlp", X)

    with torch.no_grad():
        assert torch.allclose(prediction, mlp(X), atol=1e-6)


def test_it_runs_an_exported_program(client):
    module = small_mlp()
    client.serve_model(torch.export.export(module, (X,)), "plan", allow_remote_inference=True)

    with torch.no_grad():
        assert torch.allclose(client.run_inference("plan", X), module(X), atol=1e-6)


def test_it_keeps_dtypes_both_ways(client):
    client.serve_model(torch.nn.Embedding(10, 3).double(), "embed", allow_remote_inference=True)

    prediction = client.run_inference("embed", torch.tensor([1, 7], dtype=torch.int64))

    assert prediction.dtype == torch.float64
    assert prediction.shape == (2, 3)


def test_it_sends_several_inputs_and_answers_every_output_when_asked(client):
    client.serve_model(TwoInputs(), "two", allow_remote_inference=True)
    x, y = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])

    first = client.run_inference("two", x, y)
    both = client.run_inference("two", x, y, all_outputs=True)

    assert torch.equal(first, x + y)
    assert isinstance(both, tuple)
    assert [output.tolist() for output in both] == [[4.0, 6.0], [3.0, 8.0]]


def test_it_runs_plain_json(client, mlp):
    prediction = client.run_inference_json("mlp", X.tolist())

    with torch.no_grad():
        assert torch.allclose(torch.tensor(prediction), mlp(X), atol=1e-6)


def test_it_raises_permission_denied_when_inference_is_not_allowed(client):
    client.serve_model(small_mlp(), "private")

    with pytest.raises(PermissionDenied) as caught:
        client.run_inference("private", X)

    assert caught.value.message == "You're not allowed to run inference on this model."
    assert caught.value.body == {"success": False, "status": False, "error": caught.value.message}


def test_it_raises_model_not_found(client):
    with pytest.raises(ModelNotFound, match="Model not found."):
        client.run_inference("ghost", X)


def test_it_raises_invalid_request_for_data_that_does_not_fit(client, mlp):
    with pytest.raises(InvalidRequest) as caught:
        client.run_inference("mlp", torch.rand(2, 5))

    assert caught.value.status == 400


def test_it_needs_an_input(client):
    with pytest.raises(TypeError, match="one tensor per model input"):
        client.run_inference("mlp")
