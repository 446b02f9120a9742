"""A model is a program: a model whose graph calls an operator outside the allowlist is never stored or run.

Measured on this node before the check existed: a TorchScript model calling `torch.from_file` was stored,
and its inference answered with the bytes of a file of the node's choosing; a torch.export archive
whose JSON names `torch.ops.aten.from_file.default` did the same.
"""

import io
import json

import pytest
import torch
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from gridnode.errors import BadRequest
from models_app import operators
from models_app.models import HostedModel
from tests.conftest import jit_bytes, plan_bytes
from tests.security.conftest import (
    assert_nothing_stored,
    assert_refused,
    entry_name,
    upload_model,
    zip_entries,
    zip_of,
)

pytestmark = pytest.mark.django_db

SECRET = b"node-secret-0123"  # 16 bytes


def refused_because(name: str) -> str:
    return f"The model uses an operator this node does not run: {name}"


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    return path


class ReadsAFile(torch.nn.Module):
    """Answers any input with the first bytes of a file on the node."""

    def __init__(self, path, size: int = len(SECRET)):
        super().__init__()
        self.path = str(path)
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_file(self.path, False, self.size, dtype=torch.uint8).to(torch.float32) + x * 0


class CreatesAFile(torch.nn.Module):
    """`torch.from_file(path, shared=True, n)` creates the file when it does not exist."""

    def __init__(self, path):
        super().__init__()
        self.path = str(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_file(self.path, True, 4, dtype=torch.uint8).to(torch.float32) + x


class SavesAFile(torch.nn.Module):
    def __init__(self, path):
        super().__init__()
        self.path = str(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.path)
        return x


class Prints(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("inference on", x.shape)
        return x


def test_torchscript_reads_files_when_nothing_checks_it(secret_file):
    """The threat, measured without the node: a scripted model hands back a file's bytes as its output."""
    module = torch.jit.load(io.BytesIO(jit_bytes(ReadsAFile(secret_file))))

    assert bytes(module(torch.zeros(len(SECRET))).to(torch.uint8).tolist()) == SECRET


def test_a_jit_model_that_reads_a_file_is_refused(api, secret_file, data_dir):
    response = upload_model(api, jit_bytes(ReadsAFile(secret_file)), allow_remote_inference=True)

    assert assert_refused(response) == refused_because("aten::from_file")
    assert_nothing_stored(data_dir)
    inference = api.post("/model/hostile", {"data": [0.0] * len(SECRET)}, format="json")
    assert inference.status_code == 404
    assert SECRET.decode() not in inference.content.decode()


def test_a_jit_model_that_creates_a_file_is_refused(api, canary, data_dir):
    response = upload_model(api, jit_bytes(CreatesAFile(canary)), allow_remote_inference=True)

    assert assert_refused(response) == refused_because("aten::from_file")
    assert not canary.exists()
    assert_nothing_stored(data_dir)


def test_a_jit_model_that_saves_a_file_is_refused(api, canary, data_dir):
    response = upload_model(api, jit_bytes(SavesAFile(canary)), allow_remote_inference=True)

    assert assert_refused(response) == refused_because("aten::save")
    assert not canary.exists()
    assert_nothing_stored(data_dir)


def test_a_jit_model_that_prints_is_refused(api, data_dir):
    """Printing writes to the node's output on every inference, unbounded."""
    response = upload_model(api, jit_bytes(Prints()))

    assert assert_refused(response) == refused_because("prim::Print")
    assert_nothing_stored(data_dir)


# Places a call can hide in a TorchScript module: each is walked.


class Reader(torch.nn.Module):
    def __init__(self, path):
        super().__init__()
        self.path = str(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.from_file(self.path, False, 4, dtype=torch.uint8).to(torch.float32)


class InASubmodule(torch.nn.Module):
    def __init__(self, path):
        super().__init__()
        self.inner = torch.nn.Sequential(torch.nn.Identity(), Reader(path))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class InAnExportedMethod(torch.nn.Module):
    """forward is harmless; another method, never called by forward, is not."""

    def __init__(self, path):
        super().__init__()
        self.path = str(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def leak(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_file(self.path, False, 4, dtype=torch.uint8).to(torch.float32)


@torch.jit.script
def read_four_bytes(path: str) -> torch.Tensor:
    return torch.from_file(path, False, 4, dtype=torch.uint8).to(torch.float32)


class InAScriptedFunction(torch.nn.Module):
    def __init__(self, path):
        super().__init__()
        self.path = str(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + read_four_bytes(self.path)


class InABranchOfALoop(torch.nn.Module):
    def __init__(self, path):
        super().__init__()
        self.path = str(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in range(3):
            if step == 2:
                x = x + torch.from_file(self.path, False, 4, dtype=torch.uint8).to(torch.float32)
        return x


def scripted_with_hook(path, kind: str) -> bytes:
    module = torch.nn.Linear(4, 4)
    module.path = str(path)
    if kind == "pre":

        def pre_hook(self, inputs: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
            return (inputs[0] + torch.from_file(self.path, False, 4, dtype=torch.uint8).to(torch.float32),)

        module.register_forward_pre_hook(pre_hook)
    else:

        def hook(self, inputs: tuple[torch.Tensor], output: torch.Tensor) -> torch.Tensor:
            return output + torch.from_file(self.path, False, 4, dtype=torch.uint8).to(torch.float32)

        module.register_forward_hook(hook)
    return jit_bytes(module)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda path: jit_bytes(InASubmodule(path)), id="submodule"),
        pytest.param(lambda path: jit_bytes(InAnExportedMethod(path)), id="exported-method"),
        pytest.param(lambda path: jit_bytes(InAScriptedFunction(path)), id="scripted-function"),
        pytest.param(lambda path: jit_bytes(InABranchOfALoop(path)), id="loop-and-branch"),
        pytest.param(lambda path: scripted_with_hook(path, "pre"), id="forward-pre-hook"),
        pytest.param(lambda path: scripted_with_hook(path, "post"), id="forward-hook"),
    ],
)
def test_a_call_hidden_anywhere_in_a_jit_model_is_found(api, secret_file, data_dir, build):
    response = upload_model(api, build(secret_file), allow_remote_inference=True)

    assert assert_refused(response) == refused_because("aten::from_file")
    assert_nothing_stored(data_dir)


@torch.jit.interface
class TensorFunction(torch.nn.Module):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        pass


class ThroughAnInterface(torch.nn.Module):
    """A call through a module interface names no code that could be walked before it runs."""

    implementation: TensorFunction

    def __init__(self):
        super().__init__()
        self.implementation = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implementation.forward(x)


def test_a_call_that_cannot_be_inlined_is_refused(api, data_dir):
    response = upload_model(api, jit_bytes(ThroughAnInterface()))

    assert assert_refused(response) == refused_because("prim::CallMethod")
    assert_nothing_stored(data_dir)


def test_a_jit_model_checked_in_an_inference_process_is_refused_with_the_operator(api, secret_file, data_dir):

    response = upload_model(api, jit_bytes(ReadsAFile(secret_file)), allow_remote_inference=True)

    assert assert_refused(response) == refused_because("aten::from_file")
    assert_nothing_stored(data_dir)


# torch.export programs: their JSON names the operator each node calls.


class AddsOnes(torch.nn.Module):
    def forward(self, x):
        return x + torch.ones(len(SECRET), dtype=torch.uint8)


class BranchesToOnes(torch.nn.Module):
    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda x: x + torch.ones(len(SECRET), dtype=torch.uint8), lambda x: x - 1, (x,))


def program_reading(path, module=None) -> bytes:
    """A torch.export archive whose first `aten.ones` node is rewritten to read `path` instead."""
    module = module or AddsOnes()
    entries = zip_entries(plan_bytes(module, (torch.rand(len(SECRET)),)))
    name = entry_name(entries, "models/model.json")
    program = json.loads(entries[name])
    node = next(node for node in _all_nodes(program) if node["target"] == "torch.ops.aten.ones.default")
    dtype = next(item for item in node["inputs"] if item["name"] == "dtype")  # uint8: one byte per element
    node["target"] = "torch.ops.aten.from_file.default"
    node["inputs"] = [
        {"name": "filename", "arg": {"as_string": str(path)}, "kind": 1},
        {"name": "shared", "arg": {"as_bool": False}, "kind": 1},
        {"name": "size", "arg": {"as_int": len(SECRET)}, "kind": 1},
        dtype,
    ]
    entries[name] = json.dumps(program).encode()
    return zip_of(entries)


def _all_nodes(document):
    if isinstance(document, dict):
        if "target" in document and "inputs" in document:
            yield document
        for value in document.values():
            yield from _all_nodes(value)
    elif isinstance(document, list):
        for item in document:
            yield from _all_nodes(item)


def test_torch_export_reads_files_when_nothing_checks_it(secret_file):
    """The threat for plans, measured without the node: the rewritten program loads and leaks the file."""
    program = torch.export.load(io.BytesIO(program_reading(secret_file)))

    assert bytes(program.module()(torch.zeros(len(SECRET))).to(torch.uint8).tolist()) == SECRET


@pytest.mark.parametrize("module", [AddsOnes(), BranchesToOnes()], ids=["graph", "cond-branch"])
def test_a_plan_that_reads_a_file_is_refused(api, secret_file, data_dir, module):
    response = upload_model(api, program_reading(secret_file, module), allow_remote_inference=True)

    assert assert_refused(response) == refused_because("aten::from_file")
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize("module", [AddsOnes(), BranchesToOnes()], ids=["graph", "cond-branch"])
def test_the_loaded_program_is_walked_too(secret_file, module):
    """The second line: the graph torch.export.load built is walked, subgraphs included."""
    program = torch.export.load(io.BytesIO(program_reading(secret_file, module)))

    with pytest.raises(BadRequest) as refused:
        operators.check_exported_program(program)
    assert refused.value.message == refused_because("aten::from_file")


def test_a_plan_naming_a_python_function_is_refused(api, mlp_plan, data_dir):
    """The deserializer resolves `torch.<anything>` by attribute: torch.os.system is os.system."""
    entries = zip_entries(mlp_plan)
    name = entry_name(entries, "models/model.json")
    program = json.loads(entries[name])
    program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"
    entries[name] = json.dumps(program).encode()

    response = upload_model(api, zip_of(entries))

    assert assert_refused(response) == refused_because("torch.os.system")
    assert_nothing_stored(data_dir)


# A model stored before the check (or an archive changed in storage) is checked when it is loaded.


def store_directly(model_id: str, archive: bytes, kind: str) -> None:
    name = default_storage.save(f"models/{model_id}.{'pt' if kind == 'jit' else 'pt2'}", ContentFile(archive))
    HostedModel.objects.create(
        model_id=model_id, kind=kind, archive=name, size=len(archive), sha256="0" * 64, allow_remote_inference=True
    )


@pytest.mark.parametrize("kind", ["jit", "plan"])
def test_a_stored_model_is_checked_when_it_is_loaded_for_inference(api, secret_file, kind):
    archive = jit_bytes(ReadsAFile(secret_file)) if kind == "jit" else program_reading(secret_file)
    store_directly("stored", archive, kind)

    response = api.post("/model/stored", {"data": [0.0] * len(SECRET)}, format="json")

    assert assert_refused(response) == refused_because("aten::from_file")
    assert SECRET.decode() not in response.content.decode()
    v2 = api.post(
        "/v2/models/stored/infer",
        {"inputs": [{"name": "input__0", "shape": [len(SECRET)], "datatype": "FP32", "data": [0.0] * len(SECRET)}]},
        format="json",
    )
    assert assert_refused(v2) == refused_because("aten::from_file")


def test_a_model_using_only_allowed_operators_answers(api, serve, mlp_jit):
    serve("mlp", mlp_jit, allow_remote_inference=True)

    response = api.post("/model/mlp", {"data": [[1.0, 2.0, 3.0, 4.0]]}, format="json")

    assert response.status_code == 200
    assert len(response.json()["prediction"][0]) == 3


def test_a_refused_model_is_refused_the_same_way_as_text_or_file_part(api, secret_file, data_dir):
    archive = jit_bytes(ReadsAFile(secret_file))
    as_file = api.post("/serve-model", {"model_id": "hostile", "model": io.BytesIO(archive)}, format="multipart")
    as_latin1 = api.post(
        "/serve-model",
        {"model_id": "hostile", "encoding": "ISO-8859-1", "model": archive.decode("latin-1")},
        format="json",
    )
    as_base64 = upload_model(api, archive)

    for response in (as_file, as_latin1, as_base64):
        assert assert_refused(response) == refused_because("aten::from_file")
    assert_nothing_stored(data_dir)
