"""The stock Open Inference Protocol client, tritonclient[http], against a live node."""

import numpy as np
import pytest
import torch
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import X, expected_mlp

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(live_server):
    connection = triton.InferenceServerClient(url=live_server.url.removeprefix("http://"), network_timeout=60)
    yield connection
    connection.close()


def test_health_server_and_model_metadata(client, mlp_models):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata() == {
        "name": "gridnode",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
    }
    assert client.is_model_ready("mlp-jit")
    assert client.is_model_ready("mlp-plan", model_version="1")
    assert not client.is_model_ready("nobody")
    metadata = client.get_model_metadata("mlp-plan")
    assert metadata["platform"] == "pytorch_export"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [2, 4]}]
    assert metadata["outputs"] == [{"name": "linear_1", "datatype": "FP32", "shape": [2, 3]}]


@pytest.mark.parametrize(("model_id", "input_name", "output_name"), [
    ("mlp-jit", "input__0", "output__0"),
    ("mlp-plan", "input", "linear_1"),
    ("mlp-plan", "input__0", "output__0"),
])  # fmt: skip
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_it_infers_with_the_stock_client(client, mlp_models, model_id, input_name, output_name, binary):
    tensor = triton.InferInput(input_name, [2, 4], "FP32")
    tensor.set_data_from_numpy(np.array(X, dtype=np.float32), binary_data=binary)
    outputs = [triton.InferRequestedOutput(output_name, binary_data=binary)]

    result = client.infer(model_id, [tensor], outputs=outputs, request_id="r-42")

    assert result.get_response()["id"] == "r-42"
    assert result.get_response()["model_name"] == model_id
    answer = result.as_numpy(output_name)
    assert answer.dtype == np.float32
    assert torch.allclose(torch.from_numpy(answer.copy()), expected_mlp(), atol=1e-6)


def test_with_no_outputs_named_every_output_comes_back_binary(client, serve, two_input_plan):
    serve("pair", two_input_plan, allow_remote_inference=True)
    x = triton.InferInput("x", [3], "FP32")
    x.set_data_from_numpy(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    y = triton.InferInput("y", [3], "FP32")
    y.set_data_from_numpy(np.array([4.0, 5.0, 6.0], dtype=np.float32))

    result = client.infer("pair", [x, y], request_compression_algorithm="gzip")

    assert result.as_numpy("add").tolist() == [5.0, 7.0, 9.0]
    assert result.as_numpy("mul").tolist() == [4.0, 10.0, 18.0]


def test_refusals_reach_the_client_as_its_exceptions(client, serve, mlp_jit):
    serve("private", mlp_jit)
    tensor = triton.InferInput("input__0", [2, 4], "FP32")
    tensor.set_data_from_numpy(np.array(X, dtype=np.float32))

    with pytest.raises(InferenceServerException) as refused:
        client.infer("private", [tensor])
    assert refused.value.status() == "403"
    assert refused.value.message() == "You're not allowed to run inference on this model."
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("nobody")
    assert unknown.value.status() == "404"
