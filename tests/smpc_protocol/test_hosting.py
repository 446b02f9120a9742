"""Splitting a model for hosting, and checking a stored part against its spec."""

import pytest
import torch
from torch import nn

from smpc_protocol import hosting
from smpc_protocol.spec import SpecError


def model() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3, bias=False))


@pytest.fixture
def shared() -> hosting.SharedModel:
    return hosting.split_model(model(), (1, 4, 4))


def test_it_splits_into_parts_that_fit_the_spec(shared):
    for part in shared.worker_parts:
        hosting.check_part(shared.spec, "worker", part)
    hosting.check_part(shared.spec, "crypto_provider", shared.provider_part)

    stored = {"0.masked_weight", "0.weight_mask", "0.bias", "3.masked_weight", "3.weight_mask"}
    assert set(shared.worker_parts[0]) == set(shared.worker_parts[1]) == stored
    assert set(shared.provider_part) == {"0.weight_mask", "3.weight_mask"}
    assert shared.worker_parts[0]["0.masked_weight"].shape == (9, 2)
    assert shared.worker_parts[0]["3.masked_weight"].shape == (8, 3)


def test_a_model_without_weights_has_empty_parts():
    shared = hosting.split_model(nn.Sequential(nn.ReLU(), nn.Flatten()), (2, 3))

    assert shared.worker_parts == ({}, {})
    assert shared.provider_part == {}


def test_it_refuses_a_model_it_cannot_share():
    with pytest.raises(SpecError, match="MaxPool2d"):
        hosting.split_model(nn.Sequential(nn.MaxPool2d(2)), (1, 4, 4))


def test_it_refuses_weights_it_cannot_encode():
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")

    with pytest.raises(ValueError, match="finite"):
        hosting.split_model(nn.Sequential(layer), (2,))


def changed(part: dict, name: str, value) -> dict:
    return {**part, name: value}


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda part: [part], "dict"),
        (lambda part: {name: part[name] for name in list(part)[1:]}, "missing"),
        (lambda part: changed(part, "4.bias", torch.zeros(3, dtype=torch.int64)), "extra"),
        (lambda part: changed(part, "0.bias", torch.zeros(2, dtype=torch.float64)), "int64"),
        (lambda part: changed(part, "0.bias", torch.zeros(3, dtype=torch.int64)), "shape"),
        (lambda part: changed(part, "3.weight_mask", part["3.weight_mask"].T), "shape"),
        (lambda part: changed(part, "0.bias", [0, 0]), "int64"),
    ],
)
def test_it_refuses_a_part_that_does_not_fit(shared, mangle, message):
    with pytest.raises(ValueError, match=message):
        hosting.check_part(shared.spec, "worker", mangle(shared.worker_parts[1]))


def test_a_workers_part_is_not_a_providers(shared):
    with pytest.raises(ValueError, match="extra"):
        hosting.check_part(shared.spec, "crypto_provider", shared.worker_parts[0])
