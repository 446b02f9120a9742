"""POST /v2/models/<id>/infer: v2 JSON tensors, binary tensor data, output selection, and every refusal."""

import gzip
import zlib

import numpy as np
import orjson
import pytest
import torch

from tests.conftest import X, expected_mlp, jit_bytes, plan_bytes

pytestmark = pytest.mark.django_db

SECRET = "payload-marker-7f3a"  # planted in bad requests: no error may echo it


class Echo(torch.nn.Module):
    """Answers its input unchanged, in its own dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def infer(api, model_id, body, *, path="/v2/models/{}/infer", content_type="", **headers):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    # `generic`, not `post`: stock clients send no Content-Type, which `post` would turn into multipart.
    return api.generic("POST", path.format(model_id), raw, content_type=content_type, headers=headers)


def fp32_input(name="input__0", data=X, shape=(2, 4)):
    return {"name": name, "shape": list(shape), "datatype": "FP32", "data": data}


def binary_body(header: dict, *blobs: bytes) -> tuple[bytes, dict]:
    head = orjson.dumps(header)
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


def split_binary(response) -> tuple[dict, bytes]:
    length = int(response["Inference-Header-Content-Length"])
    return orjson.loads(response.content[:length]), response.content[length:]


@pytest.fixture(params=["jit", "plan"])
def mlp(request, mlp_models):
    return request.param, mlp_models[request.param]


def output_name(kind):
    return "output__0" if kind == "jit" else "linear_1"


@pytest.mark.parametrize("content_type", ["", "application/json", "text/plain", "application/x-www-form-urlencoded"])
def test_it_runs_flat_json_data_whatever_the_content_type(api, mlp, content_type):
    kind, model_id = mlp
    flat = [value for row in X for value in row]
    response = infer(api, model_id, {"id": "req-1", "inputs": [fp32_input(data=flat)]}, content_type=content_type)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_name"] == model_id
    assert body["model_version"] == "1"
    assert body["id"] == "req-1"
    [output] = body["outputs"]
    assert output["name"] == output_name(kind)
    assert output["datatype"] == "FP32"
    assert output["shape"] == [2, 3]
    assert torch.allclose(torch.tensor(output["data"]).reshape(2, 3), expected_mlp(), atol=1e-6)


@pytest.mark.parametrize(
    "path", ["/v2/models/{}/infer/", "/v2/models/{}/versions/1/infer", "/v2/models/{}/versions/1/infer/"]
)
def test_it_takes_nested_data_and_every_spelling_of_the_path(api, mlp, path):
    _, model_id = mlp
    response = infer(api, model_id, {"inputs": [fp32_input()]}, path=path)

    assert response.status_code == 200, response.content
    assert "id" not in response.json()
    data = response.json()["outputs"][0]["data"]
    assert torch.allclose(torch.tensor(data).reshape(2, 3), expected_mlp(), atol=1e-6)


def test_it_refuses_a_version_other_than_1(api, mlp):
    _, model_id = mlp
    response = infer(api, model_id, {"inputs": [fp32_input()]}, path="/v2/models/{}/versions/2/infer")

    assert response.status_code == 404
    assert "version" in response.json()["error"]


def test_a_plan_takes_its_signature_names_and_input_n(api, serve, two_input_plan):
    serve("pair", two_input_plan, allow_remote_inference=True)
    x, y = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    by_name = {
        "inputs": [  # given in the reverse order: names decide
            {"name": "y", "shape": [3], "datatype": "FP32", "data": y},
            {"name": "x", "shape": [3], "datatype": "FP32", "data": x},
        ]
    }
    by_position = {"inputs": [
        {"name": "input__0", "shape": [3], "datatype": "FP32", "data": x},
        {"name": "input__1", "shape": [3], "datatype": "FP32", "data": y},
    ]}  # fmt: skip

    for body in (by_name, by_position):
        response = infer(api, "pair", body)
        assert response.status_code == 200, response.content
        outputs = {out["name"]: out["data"] for out in response.json()["outputs"]}
        assert outputs == {"add": [5.0, 7.0, 9.0], "mul": [4.0, 10.0, 18.0]}


@pytest.mark.parametrize("archive", ["two_input_jit", "two_input_plan"])
def test_it_answers_only_the_outputs_asked_for_by_name_or_position(api, serve, archive, request):
    serve("pair", request.getfixturevalue(archive), allow_remote_inference=True)
    inputs = [
        {"name": "input__0", "shape": [3], "datatype": "FP32", "data": [2.0, 3.0, 1.0]},
        {"name": "input__1", "shape": [3], "datatype": "FP32", "data": [4.0, 5.0, 2.0]},
    ]
    by_position = infer(api, "pair", {"inputs": inputs, "outputs": [{"name": "output__1"}]})

    assert by_position.status_code == 200, by_position.content
    # Answered under the name asked for, so the caller finds it.
    assert by_position.json()["outputs"] == [
        {"name": "output__1", "datatype": "FP32", "shape": [3], "data": [8.0, 15.0, 2.0]}
    ]
    if archive.endswith("plan"):
        by_name = infer(api, "pair", {"inputs": inputs, "outputs": [{"name": "mul"}, {"name": "add"}]})
        assert [(out["name"], out["data"]) for out in by_name.json()["outputs"]] == [
            ("mul", [8.0, 15.0, 2.0]),
            ("add", [6.0, 8.0, 3.0]),
        ]


def test_it_reads_binary_inputs_and_answers_binary_outputs(api, mlp):
    kind, model_id = mlp
    x = np.array(X, dtype=np.float32)
    header = {
        "inputs": [{"name": "input__0", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}],
        "outputs": [{"name": output_name(kind), "parameters": {"binary_data": True}}],
    }
    raw, headers = binary_body(header, x.tobytes())
    response = infer(api, model_id, raw, **headers)

    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/octet-stream"
    body, blob = split_binary(response)
    [output] = body["outputs"]
    assert output["parameters"] == {"binary_data_size": 24}
    assert "data" not in output
    result = np.frombuffer(blob, dtype=np.float32).reshape(output["shape"])
    assert torch.allclose(torch.from_numpy(result.copy()), expected_mlp(), atol=1e-6)


def test_binary_data_output_applies_to_every_output(api, serve, two_input_jit):
    serve("pair", two_input_jit, allow_remote_inference=True)
    inputs = [{"name": f"input__{n}", "shape": [2], "datatype": "INT64", "data": [n + 1, n + 2]} for n in range(2)]
    response = infer(api, "pair", {"inputs": inputs, "parameters": {"binary_data_output": True}})

    body, blob = split_binary(response)
    assert [out["parameters"]["binary_data_size"] for out in body["outputs"]] == [16, 16]
    assert np.frombuffer(blob, dtype=np.int64).tolist() == [3, 5, 2, 6]


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("FP32", [1.5, -2.0], torch.float32),
        ("FP64", [1.5, -2.0], torch.float64),
        ("FP16", [1.5, -2.0], torch.float16),
        ("BF16", [1.5, -2.0], torch.bfloat16),
        ("INT8", [-128, 127], torch.int8),
        ("UINT8", [0, 255], torch.uint8),
        ("INT16", [-3, 4], torch.int16),
        ("INT32", [-3, 2**31 - 1], torch.int32),
        ("INT64", [-3, 2**40], torch.int64),
        ("BOOL", [True, False], torch.bool),
    ],
)
def test_every_datatype_round_trips_as_json_and_as_binary(api, serve, datatype, data, dtype):
    serve("echo", jit_bytes(Echo()), allow_remote_inference=True)
    as_json = {"inputs": [{"name": "input__0", "shape": [2], "datatype": datatype, "data": data}]}
    response = infer(api, "echo", as_json)
    assert response.status_code == 200, response.content
    [output] = response.json()["outputs"]
    assert (output["datatype"], output["shape"], output["data"]) == (datatype, [2], data)

    tensor = torch.tensor(data, dtype=dtype)
    raw_input = (tensor.view(torch.int16) if dtype == torch.bfloat16 else tensor).numpy().tobytes()
    binary_input = {"name": "input__0", "shape": [2], "datatype": datatype}
    binary_input["parameters"] = {"binary_data_size": len(raw_input)}
    header = {"inputs": [binary_input], "parameters": {"binary_data_output": True}}
    raw, headers = binary_body(header, raw_input)
    response = infer(api, "echo", raw, **headers)
    assert response.status_code == 200, response.content
    body, blob = split_binary(response)
    assert body["outputs"][0]["datatype"] == datatype
    assert blob == raw_input


def test_a_plan_runs_on_the_integer_datatype_it_declares(api, serve):
    embedding = torch.nn.Embedding(10, 2)
    serve("embed", plan_bytes(embedding, (torch.tensor([1, 2]),)), allow_remote_inference=True)
    response = infer(api, "embed", {"inputs": [{"name": "input", "shape": [2], "datatype": "INT64", "data": [3, 7]}]})

    assert response.status_code == 200, response.content
    [output] = response.json()["outputs"]
    with torch.no_grad():
        assert torch.allclose(torch.tensor(output["data"]).reshape(2, 2), embedding(torch.tensor([3, 7])))


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_it_inflates_a_compressed_body(api, mlp, encoding):
    _, model_id = mlp
    raw = orjson.dumps({"inputs": [fp32_input()]})
    packed = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    response = infer(api, model_id, packed, **{"Content-Encoding": encoding})

    assert response.status_code == 200, response.content
    assert torch.allclose(torch.tensor(response.json()["outputs"][0]["data"]).reshape(2, 3), expected_mlp(), atol=1e-6)


def test_it_is_404_for_an_unknown_model(api):
    response = infer(api, "nobody", {"inputs": [fp32_input()]})

    assert response.status_code == 404
    assert response.json() == {"error": "Model not found."}


def test_it_is_403_when_the_owner_does_not_allow_inference(api, serve, mlp_jit):
    serve("private", mlp_jit, allow_remote_inference=False)
    response = infer(api, "private", {"inputs": [fp32_input()]})

    assert response.status_code == 403
    assert response.json() == {"error": "You're not allowed to run inference on this model."}


def test_it_is_400_for_an_id_that_breaks_the_rules(api):
    response = infer(api, "-bad", {"inputs": [fp32_input()]})

    assert response.status_code == 400
    assert "model_id" in response.json()["error"]


def test_it_is_405_for_get(api, mlp):
    response = api.get(f"/v2/models/{mlp[1]}/infer")

    assert response.status_code == 405
    assert "error" in response.json()


CLASSIFY = {"classification": 1}
BAD_BODIES = {
    "not json": b"{" + SECRET.encode(),
    "not an object": orjson.dumps([SECRET]),
    "no inputs": {"id": "x"},
    "empty inputs": {"inputs": []},
    "input not an object": {"inputs": [SECRET]},
    "unknown name": {"inputs": [fp32_input(name=SECRET)]},
    "input__N past the end": {"inputs": [fp32_input(name="input__1")]},
    "given twice": {"inputs": [fp32_input(), fp32_input()]},
    "bad datatype": {"inputs": [{**fp32_input(), "datatype": SECRET}]},
    "BYTES": {"inputs": [{**fp32_input(), "datatype": "BYTES"}]},
    "shape not a list": {"inputs": [{**fp32_input(), "shape": SECRET}]},
    "negative size": {"inputs": [{**fp32_input(), "shape": [-2, -4]}]},
    "count mismatch": {"inputs": [{**fp32_input(), "shape": [3, 4]}]},
    "ragged": {"inputs": [fp32_input(data=[[1.0, 2.0, 3.0, 4.0], [1.0]])]},
    "data not an array": {"inputs": [fp32_input(data=SECRET)]},
    "strings as numbers": {"inputs": [fp32_input(data=[[SECRET] * 4] * 2)]},
    "no data": {"inputs": [{"name": "input__0", "shape": [2, 4], "datatype": "FP32"}]},
    "booleans as FP32": {"inputs": [fp32_input(data=[[True] * 4] * 2)]},
    "shared memory": {"inputs": [{**fp32_input(), "parameters": {"shared_memory_region": SECRET}}]},
    "parameters not an object": {"inputs": [{**fp32_input(), "parameters": SECRET}]},
    "id not a string": {"id": 7, "inputs": [fp32_input()]},
    "unknown output": {"inputs": [fp32_input()], "outputs": [{"name": SECRET}]},
    "outputs not a list": {"inputs": [fp32_input()], "outputs": SECRET},
    "classification": {"inputs": [fp32_input()], "outputs": [{"name": "output__0", "parameters": CLASSIFY}]},
    "binary_data not a bool": {"inputs": [fp32_input()], "parameters": {"binary_data_output": SECRET}},
    "does not fit the model": {"inputs": [fp32_input(data=[1.0] * 6, shape=(2, 3))]},
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_BODIES)
def test_it_is_400_for_a_body_it_cannot_run_and_never_echoes_it(api, mlp_models, case):
    response = infer(api, "mlp-jit", BAD_BODIES[case])

    assert response.status_code == 400, response.content
    assert set(response.json()) == {"error"}
    assert SECRET not in response.content.decode()


@pytest.mark.parametrize(
    ("datatype", "data", "words"),
    [("INT32", [1.5, 2.0], "whole numbers"), ("INT8", [1, 300], "outside the range"), ("BOOL", [1, 0], "true/false")],
)
def test_it_is_400_for_data_that_does_not_match_its_datatype(api, serve, datatype, data, words):
    serve("echo", jit_bytes(Echo()), allow_remote_inference=True)
    response = infer(api, "echo", {"inputs": [{"name": "input__0", "shape": [2], "datatype": datatype, "data": data}]})

    assert response.status_code == 400
    assert words in response.json()["error"]


def test_a_plan_refuses_a_datatype_or_shape_other_than_its_signature(api, mlp_models):
    wrong_type = infer(api, "mlp-plan", {"inputs": [{**fp32_input(), "datatype": "FP64"}]})
    wrong_shape = infer(api, "mlp-plan", {"inputs": [fp32_input(data=[[1.0] * 4], shape=(1, 4))]})

    assert wrong_type.status_code == 400
    assert wrong_type.json() == {"error": "Input input is FP32 for this model; send it as FP32."}
    assert wrong_shape.status_code == 400
    assert wrong_shape.json() == {"error": "Input input has shape [2, 4] for this model (-1: any size)."}


@pytest.mark.parametrize(
    ("header_length", "size", "extra"),
    [("x", 32, b""), ("100000", 32, b""), (None, 16, b""), (None, 32, b"\0" * 4), (None, 64, b"")],
)
def test_it_is_400_for_binary_data_that_does_not_add_up(api, mlp_models, header_length, size, extra):
    header = {
        "inputs": [{"name": "input__0", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": size}}]
    }
    raw, headers = binary_body(header, np.zeros((2, 4), dtype=np.float32).tobytes()[:size], extra)
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    response = infer(api, "mlp-jit", raw, **headers)

    assert response.status_code == 400, response.content
    assert set(response.json()) == {"error"}


def test_it_refuses_an_unknown_or_broken_content_encoding(api, mlp_models):
    unknown = infer(api, "mlp-jit", {"inputs": [fp32_input()]}, **{"Content-Encoding": "br"})
    broken = infer(api, "mlp-jit", b"not gzip at all", **{"Content-Encoding": "gzip"})

    assert unknown.status_code == 415
    assert broken.status_code == 400
    assert "error" in unknown.json()
    assert "error" in broken.json()


def test_it_is_413_when_the_inflated_body_is_too_large(api, mlp_models, settings):
    settings.GRIDNODE_MAX_BODY_BYTES = 2048
    packed = gzip.compress(orjson.dumps({"inputs": [fp32_input()], "pad": "0" * 10_000}))
    response = infer(api, "mlp-jit", packed, **{"Content-Encoding": "gzip"})

    assert response.status_code == 413
    assert "error" in response.json()
