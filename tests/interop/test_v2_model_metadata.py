"""GET /v2/models/<id>: platform, versions, and the tensors the archive records, under the inference permission."""

import io

import pytest
import torch

from tests.conftest import plan_bytes, small_mlp

pytestmark = pytest.mark.django_db


def test_a_plan_reports_its_signature_names_datatypes_and_shapes(api, mlp_models):
    response = api.get("/v2/models/mlp-plan")

    assert response.status_code == 200
    assert response.json() == {
        "name": "mlp-plan",
        "versions": ["1"],
        "platform": "pytorch_export",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4]}],
        "outputs": [{"name": "linear_1", "datatype": "FP32", "shape": [2, 3]}],
    }


def test_a_jit_model_reports_input_n_and_output_n_with_shapes_unknown(api, mlp_models):
    response = api.get("/v2/models/mlp-jit/")

    assert response.status_code == 200
    assert response.json() == {
        "name": "mlp-jit",
        "versions": ["1"],
        "platform": "pytorch_torchscript",
        "inputs": [{"name": "input__0", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "output__0", "datatype": "FP32", "shape": [-1]}],
    }


def test_a_jit_model_reports_as_many_outputs_as_its_forward_returns(api, serve, two_input_jit):
    serve("pair", two_input_jit, allow_remote_inference=True)
    body = api.get("/v2/models/pair").json()

    assert [spec["name"] for spec in body["inputs"]] == ["input__0", "input__1"]
    assert [spec["name"] for spec in body["outputs"]] == ["output__0", "output__1"]


def test_dynamic_dimensions_are_minus_one_and_dtypes_are_the_declared_ones(api, serve):
    exported = torch.export.export(small_mlp(), (torch.rand(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(exported, buffer)
    serve("batched", buffer.getvalue(), allow_remote_inference=True)
    serve("embed", plan_bytes(torch.nn.Embedding(10, 2), (torch.tensor([1, 2]),)), allow_remote_inference=True)

    assert api.get("/v2/models/batched").json()["inputs"][0]["shape"] == [-1, 4]
    assert api.get("/v2/models/batched").json()["outputs"][0]["shape"] == [-1, 3]
    assert api.get("/v2/models/embed").json()["inputs"][0]["datatype"] == "INT64"
    assert api.get("/v2/models/embed").json()["outputs"][0] == {
        "name": "embedding",
        "datatype": "FP32",
        "shape": [2, 2],
    }


def test_it_answers_under_version_1_only(api, mlp_models):
    assert api.get("/v2/models/mlp-plan/versions/1").status_code == 200
    response = api.get("/v2/models/mlp-plan/versions/7")
    assert response.status_code == 404
    assert "version" in response.json()["error"]


def test_it_is_404_for_an_unknown_model(api):
    response = api.get("/v2/models/nobody")

    assert response.status_code == 404
    assert response.json() == {"error": "Model not found."}


def test_a_private_models_metadata_is_403(api, serve, mlp_plan):
    serve("private", mlp_plan, allow_download=True, allow_remote_inference=False)
    response = api.get("/v2/models/private")

    assert response.status_code == 403
    assert response.json() == {"error": "You're not allowed to run inference on this model."}


def test_metadata_past_the_answer_cap_is_refused_as_any_answer_is(api, mlp_models, settings):
    settings.GRIDNODE_MAX_ANSWER_BYTES = 100  # the jit model's metadata takes 194 bytes

    response = api.get("/v2/models/mlp-jit")

    assert response.status_code == 422
    assert "GRIDNODE_MAX_ANSWER_BYTES" in response.json()["error"]
