"""POST /model/<id> (and /models/<id>): both kinds, both data forms, multi-input, and every refusal."""

import base64
import io

import pytest
import torch

from gridnode.cache import ArchiveCache
from models_app import executor, executor_pool
from tests.api_cases import PathIdRuleCases, UnknownIdCases
from tests.conftest import TwoInputs, small_mlp
from tests.models_app.helpers import HostedModelCases

pytestmark = pytest.mark.django_db

X = [[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]]


class TestIdCases(HostedModelCases, UnknownIdCases, PathIdRuleCases):
    method = "post"
    path = "/model/{id}"
    error_fields = {"success": False, "status": False}

    def body(self, object_id):
        return {"data": X}


def expected(x=X):
    with torch.no_grad():
        return small_mlp()(torch.tensor(x, dtype=torch.float32))


def saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


@pytest.fixture(params=["jit", "plan"])
def mlp_id(request, serve, mlp_jit, mlp_plan):
    serve(request.param, mlp_jit if request.param == "jit" else mlp_plan, allow_remote_inference=True)
    return request.param


@pytest.mark.parametrize("path", ["/model/{}", "/model/{}/", "/models/{}", "/models/{}/"])
def test_it_runs_plain_json_data(api, mlp_id, path):
    response = api.post(path.format(mlp_id), {"data": X}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["status"] is True
    assert torch.allclose(torch.tensor(body["prediction"]), expected(), atol=1e-6)


@pytest.mark.parametrize("encoding", ["ISO-8859-1", "latin-1", "base64"])
def test_it_runs_serialized_data_and_answers_in_the_same_encoding(api, mlp_id, encoding):
    raw = saved(torch.tensor(X))
    text = base64.b64encode(raw).decode() if encoding == "base64" else raw.decode("latin-1")
    response = api.post(f"/model/{mlp_id}", {"encoding": encoding, "data": text}, format="json")

    assert response.status_code == 200
    prediction = response.json()["prediction"]
    out = base64.b64decode(prediction) if encoding == "base64" else prediction.encode("latin-1")
    assert torch.allclose(torch.load(io.BytesIO(out), weights_only=True), expected(), atol=1e-6)


def test_it_reads_json_ints_as_floats_for_a_float_model(api, mlp_id):
    ints = [[1, 2, 3, 4], [0, 0, 1, 1]]
    response = api.post(f"/model/{mlp_id}", {"data": ints}, format="json")

    assert response.status_code == 200
    assert torch.allclose(torch.tensor(response.json()["prediction"]), expected(ints), atol=1e-6)


def test_it_casts_json_data_to_the_dtype_a_plan_declares(api, serve):
    from tests.conftest import plan_bytes

    embedding = torch.nn.Embedding(10, 2)
    serve("embed", plan_bytes(embedding, (torch.tensor([1, 2]),)), allow_remote_inference=True)
    response = api.post("/model/embed", {"data": [3, 7]}, format="json")

    assert response.status_code == 200
    with torch.no_grad():
        assert torch.allclose(torch.tensor(response.json()["prediction"]), embedding(torch.tensor([3, 7])))


def test_it_accepts_a_form_body_with_a_json_array(api, mlp_id):
    import json
    from urllib.parse import urlencode

    body = urlencode({"data": json.dumps(X)})
    response = api.post(f"/model/{mlp_id}", body, content_type="application/x-www-form-urlencoded")

    assert response.status_code == 200
    assert torch.allclose(torch.tensor(response.json()["prediction"]), expected(), atol=1e-6)


def test_it_accepts_a_multipart_file_part_of_torch_save_bytes(api, mlp_id):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("x.pt", saved(torch.tensor(X)))
    response = api.post(f"/model/{mlp_id}", {"data": upload}, format="multipart")

    assert response.status_code == 200
    out = response.json()["prediction"].encode("latin-1")
    assert torch.allclose(torch.load(io.BytesIO(out), weights_only=True), expected(), atol=1e-6)


@pytest.fixture(params=["jit", "plan"])
def two_input_id(request, serve, two_input_jit, two_input_plan):
    serve(
        f"two-{request.param}", two_input_jit if request.param == "jit" else two_input_plan, allow_remote_inference=True
    )
    return f"two-{request.param}"


def test_it_runs_a_multi_input_model_from_json(api, two_input_id):
    response = api.post(f"/model/{two_input_id}", {"data": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}, format="json")

    assert response.status_code == 200
    assert response.json()["prediction"] == [5.0, 7.0, 9.0]  # first output only, as older nodes answered


def test_it_answers_every_output_when_asked(api, two_input_id):
    body = {"data": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], "all_outputs": True}
    response = api.post(f"/model/{two_input_id}", body, format="json")

    assert response.status_code == 200
    assert response.json()["prediction"] == [[5.0, 7.0, 9.0], [4.0, 10.0, 18.0]]


def test_it_runs_a_multi_input_model_from_a_serialized_list(api, two_input_id):
    x, y = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 2.0])
    body = {"encoding": "latin1", "data": saved([x, y]).decode("latin-1"), "all_outputs": "true"}
    response = api.post(f"/model/{two_input_id}", body, format="json")

    assert response.status_code == 200
    outputs = torch.load(io.BytesIO(response.json()["prediction"].encode("latin-1")), weights_only=True)
    assert [o.tolist() for o in outputs] == [[3.0, 4.0, 5.0], [2.0, 4.0, 6.0]]


def test_it_answers_403_when_inference_is_not_allowed(api, serve, mlp_jit):
    serve("private", mlp_jit, allow_download=True)
    response = api.post("/model/private", {"data": X}, format="json")

    assert response.status_code == 403
    assert response.json() == {
        "success": False,
        "status": False,
        "error": "You're not allowed to run inference on this model.",
    }


class Canary:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'data' is required."),
        ({"data": "[[1, 2"}, "neither a JSON array"),
        ({"data": {"a": 1}}, "must be a (nested) JSON array"),
        ({"data": [[1.0, 2.0], [3.0]]}, "rectangular"),
        ({"data": [[True, False, True, True]]}, "numbers, not booleans"),
        ({"data": [[1.0, 2.0, 3.0]]}, "The data does not fit the model"),
        ({"data": X, "encoding": "utf-16"}, "Unknown encoding"),
        ({"data": X, "encoding": "base64"}, "must be text under the base64 encoding"),
        ({"data": "***", "encoding": "base64"}, "not valid base64"),
        ({"data": "not torch bytes", "encoding": "latin-1"}, "is not a tensor saved with torch.save"),
        ({"data": saved({"x": 1}).decode("latin-1"), "encoding": "latin-1"}, "must hold a tensor or a list of tensors"),
        ({"data": saved(Canary()).decode("latin-1"), "encoding": "latin-1"}, "is not a tensor saved with torch.save"),
        ({"data": X, "all_outputs": "maybe"}, "'all_outputs' must be true or false."),
    ],
)
def test_it_answers_400_for_data_it_cannot_use(api, mlp_id, body, message, capsys):
    response = api.post(f"/model/{mlp_id}", body, format="json")

    assert response.status_code == 400
    payload = response.json()
    assert payload["success"] is False
    assert payload["status"] is False
    assert message in payload["error"]
    assert "pwned" not in capsys.readouterr().out


def test_it_answers_400_for_the_wrong_number_of_inputs(api, two_input_id):
    response = api.post(f"/model/{two_input_id}", {"data": [1.0, 2.0, 3.0]}, format="json")

    assert response.status_code == 400
    assert "takes 2 inputs" in response.json()["error"]


def test_it_answers_nan_outputs_as_null(api, serve):
    from tests.conftest import jit_bytes

    class Log(torch.nn.Module):
        def forward(self, x):
            return torch.log(x)

    serve("log", jit_bytes(Log()), allow_remote_inference=True)
    response = api.post("/model/log", {"data": [1.0, -1.0]}, format="json")

    assert response.status_code == 200
    assert response.json()["prediction"] == [0.0, None]


def test_two_inputs_module_is_well_formed():
    assert TwoInputs()(torch.ones(1), torch.ones(1))[1].item() == 1.0


def test_an_error_frame_carries_no_more_text_than_a_web_process_passes_on():
    """An error quoting 3 MB of what the caller sent made a frame header past the 1 MiB a web process reads:
    the caller got 500 "The model stopped the process that ran it", though nothing had stopped."""
    stats = {"cache_hit": False, "evictions": 0, "runs": 0}
    frame = executor_pool._error_frame(400, "x" * 3_000_000, {}, stats, ArchiveCache(1))

    assert frame.header["error"] == "x" * executor.MAX_ERROR_CHARS
