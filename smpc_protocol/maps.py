"""The linear maps of the supported layers on int64 ring tensors (torch's conv2d has no int64 kernels).

Linear and Conv2d layers are written as one matrix product, `lift(x) @ matrix`: for a convolution `lift`
cuts the (zero-padded) input into patches, im2col style. `lift` is linear, so a product of shares is the
share of the product, which is what the Beaver multiplication in `engine` relies on.
"""

import torch
from torch import nn
from torch.nn import functional

from smpc_protocol.spec import CONV2D, LINEAR, Layer


def lift(layer: Layer, inputs: torch.Tensor) -> torch.Tensor:
    """The rows the layer's matrix multiplies: the inputs themselves, or a convolution's patches."""
    if layer.kind == LINEAR:
        return inputs
    padding_h, padding_w = layer.settings["padding"]
    padded = functional.pad(inputs, (padding_w, padding_w, padding_h, padding_h)) if padding_h or padding_w else inputs
    patches = _windows(padded, layer.settings["kernel_size"], layer.settings["stride"])
    batch, channels, out_h, out_w, kernel_h, kernel_w = patches.shape
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(batch * out_h * out_w, channels * kernel_h * kernel_w)


def product(layer: Layer, inputs: torch.Tensor, matrix: torch.Tensor, output_shape: tuple[int, ...]) -> torch.Tensor:
    """`inputs` through the layer's matrix (no bias), shaped as the layer's output, batch first."""
    rows = lift(layer, inputs) @ matrix
    if layer.kind == LINEAR:
        return rows
    channels, out_h, out_w = output_shape
    return rows.reshape(inputs.shape[0], out_h, out_w, channels).permute(0, 3, 1, 2).contiguous()


def add_bias(layer: Layer, outputs: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Outputs plus a per-output-feature (or per-channel) bias."""
    if layer.kind == CONV2D:
        return outputs + bias.reshape(1, -1, 1, 1)
    return outputs + bias


def weight_matrix(module: nn.Linear | nn.Conv2d) -> torch.Tensor:
    """A Linear's or Conv2d's weights as the (inputs, outputs) matrix that `product` multiplies by."""
    weight = module.weight.detach()
    if isinstance(module, nn.Conv2d):
        return weight.reshape(weight.shape[0], -1).T.contiguous()
    return weight.T.contiguous()


def window_sums(layer: Layer, inputs: torch.Tensor) -> torch.Tensor:
    """The sum over each pooling window (exact on shares: a public linear map)."""
    return _windows(inputs, layer.settings["kernel_size"], layer.settings["stride"]).sum(dim=(-1, -2))


def pool_scale(layer: Layer, fraction_bits: int) -> int:
    """1 / (window size) in fixed point: window sums times this, truncated, are the averages."""
    kernel_h, kernel_w = layer.settings["kernel_size"]
    return round(2**fraction_bits / (kernel_h * kernel_w))


def _windows(inputs: torch.Tensor, kernel, stride) -> torch.Tensor:
    return inputs.unfold(2, kernel[0], stride[0]).unfold(3, kernel[1], stride[1])
