"""Fixtures for the interoperability tests: the reference models served with inference allowed."""

import pytest
import torch

from tests.conftest import small_mlp

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
