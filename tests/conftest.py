"""Shared fixtures: storage in a temp folder, an API client, and small models built with torch."""

import io
import os

import pytest
import torch
from rest_framework.test import APIClient

# The shared cases of tests/api_cases.py assert outside a test module: pytest explains their failures too.
pytest.register_assert_rewrite("tests.api_cases")

# The test process's own pool of inference processes (models_app/executor.py) has one process, so that
# which process loaded which model is not left to chance; tests of the pool itself start their own nodes.
os.environ.setdefault("GRIDNODE_INFERENCE_PROCESSES", "1")


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    """Every test stores its files under its own temp folder, never in the checkout's var/."""
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.FILE_UPLOAD_TEMP_DIR = tmp_path / "tmp"
    settings.FILE_UPLOAD_TEMP_DIR.mkdir()
    return tmp_path


@pytest.fixture
def api():
    return APIClient()


class TwoInputs(torch.nn.Module):
    """A model with two inputs and two outputs, for the multi-input paths."""

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        return x + y, x * y


def small_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def jit_bytes(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def plan_bytes(module: torch.nn.Module, example_inputs: tuple) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(module, example_inputs), buffer)
    return buffer.getvalue()


def saved_tensor(values) -> bytes:
    """`torch.save` bytes of a float32 tensor."""
    buffer = io.BytesIO()
    torch.save(torch.tensor(values, dtype=torch.float32), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def mlp_jit() -> bytes:
    return jit_bytes(small_mlp())


@pytest.fixture(scope="session")
def mlp_plan() -> bytes:
    return plan_bytes(small_mlp(), (torch.rand(2, 4),))


@pytest.fixture(scope="session")
def two_input_jit() -> bytes:
    return jit_bytes(TwoInputs())


@pytest.fixture(scope="session")
def two_input_plan() -> bytes:
    return plan_bytes(TwoInputs(), (torch.rand(3), torch.rand(3)))


@pytest.fixture
def serve(api):
    """Upload a model over HTTP the way PyGrid clients did (latin-1 text in JSON); asserts success."""

    def upload(model_id: str, archive: bytes, **flags):
        body = {"model_id": model_id, "encoding": "ISO-8859-1", "model": archive.decode("latin-1"), **flags}
        response = api.post("/serve-model", body, format="json")
        assert response.status_code == 200, response.content
        return response

    return upload


# The reference MLP's input and answer, and the model served with inference allowed.
X = [[0.5, -1.0, 2.0, 0.25], [1.0, 0.0, -0.5, 3.0]]


def expected_mlp(x=X) -> torch.Tensor:
    """What the reference MLP answers for `x`."""
    with torch.no_grad():
        return small_mlp()(torch.tensor(x, dtype=torch.float32))


@pytest.fixture
def mlp_models(serve, mlp_jit, mlp_plan):
    """The reference MLP as a TorchScript model `mlp-jit` and a torch.export model `mlp-plan`."""
    serve("mlp-jit", mlp_jit, allow_remote_inference=True)
    serve("mlp-plan", mlp_plan, allow_remote_inference=True)
    return {"jit": "mlp-jit", "plan": "mlp-plan"}
