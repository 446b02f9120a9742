"""Splitting a model into what each node stores: a share for each worker and a mask for the provider.

For every Linear or Conv2d layer with weight matrix W (fixed point), the owner draws a uniform mask B
and computes F = W - B. Both workers store F (uniform to them, since neither knows B) and one additive
share of B; the crypto provider stores B (uniform, independent of W). This is the "fixed per-layer weight
mask opened once at hosting time": per inference only the activations' side of the Beaver product is
fresh. Biases are shared additively with 32 fractional bits, the scale of a product before truncation.
"""

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from smpc_protocol import ring
from smpc_protocol.maps import weight_matrix
from smpc_protocol.spec import WEIGHTED, ModelSpec

MASKED_WEIGHT = "masked_weight"
WEIGHT_MASK = "weight_mask"
BIAS = "bias"


def tensor_name(layer_index: int, kind: str) -> str:
    """The name a layer's tensor has in a stored part, for example `0.masked_weight`."""
    return f"{layer_index}.{kind}"


@dataclass(frozen=True)
class SharedModel:
    """A model split for hosting: its spec, one part per worker (party 0 and 1), and the provider's part."""

    spec: ModelSpec
    worker_parts: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
    provider_part: dict[str, torch.Tensor]


def split_model(module: nn.Module, input_shape) -> SharedModel:
    """Encode and split an `nn.Sequential` of supported layers; SpecError for anything else."""
    spec = ModelSpec.from_sequential(module, input_shape)
    worker_parts: tuple[dict, dict] = ({}, {})
    provider_part: dict[str, torch.Tensor] = {}
    sequential = cast(nn.Sequential, module)  # from_sequential refused anything else
    for index, (layer, child) in enumerate(zip(spec.layers, sequential, strict=True)):
        if layer.kind not in WEIGHTED:
            continue
        weighted = cast(nn.Linear | nn.Conv2d, child)  # the spec's weighted layers are made from these alone
        weights = ring.encode(weight_matrix(weighted))
        mask = ring.random_ring(weights.shape)
        masked = weights - mask
        mask_shares = ring.share(mask)
        provider_part[tensor_name(index, WEIGHT_MASK)] = mask
        for party in (0, 1):
            worker_parts[party][tensor_name(index, MASKED_WEIGHT)] = masked
            worker_parts[party][tensor_name(index, WEIGHT_MASK)] = mask_shares[party]
        if weighted.bias is not None:  # what the spec's "bias" setting was made from
            bias_shares = ring.share(ring.encode(weighted.bias.detach(), 2 * ring.FRACTION_BITS))
            for party in (0, 1):
                worker_parts[party][tensor_name(index, BIAS)] = bias_shares[party]
    return SharedModel(spec=spec, worker_parts=worker_parts, provider_part=provider_part)


def expected_part_shapes(spec: ModelSpec, role: str) -> dict[str, tuple[int, ...]]:
    """The tensors (and shapes) a stored part must hold: role is "worker" or "crypto_provider"."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, layer in enumerate(spec.layers):
        if layer.kind not in WEIGHTED:
            continue
        settings = layer.settings
        if layer.kind == "linear":
            inputs, outputs = settings["in_features"], settings["out_features"]
        else:
            kernel_h, kernel_w = settings["kernel_size"]
            inputs, outputs = settings["in_channels"] * kernel_h * kernel_w, settings["out_channels"]
        shapes[tensor_name(index, WEIGHT_MASK)] = (inputs, outputs)
        if role == "worker":
            shapes[tensor_name(index, MASKED_WEIGHT)] = (inputs, outputs)
            if settings["bias"]:
                shapes[tensor_name(index, BIAS)] = (outputs,)
    return shapes


def check_part(spec: ModelSpec, role: str, part) -> None:
    """ValueError unless `part` is exactly the int64 tensors `spec` needs for `role`."""
    if not isinstance(part, dict):
        raise ValueError("a part must be a dict of named tensors")
    expected = expected_part_shapes(spec, role)
    if set(part) != set(expected):
        missing, extra = sorted(set(expected) - set(part)), sorted(set(part) - set(expected))
        raise ValueError(f"the part does not match the spec (missing: {missing or 'none'}, extra: {extra or 'none'})")
    for name, shape in expected.items():
        tensor = part[name]
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.int64 or tuple(tensor.shape) != shape:
            raise ValueError(f"'{name}' must be an int64 tensor of shape {list(shape)}")
