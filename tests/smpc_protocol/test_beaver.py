"""Linear and Conv2d layers on shares: Beaver products with the fixed weight mask, exact in the ring."""

import pytest
import torch
from torch import nn
from torch.nn import functional

from smpc_protocol import hosting, maps, ring
from smpc_protocol.spec import ModelSpec
from tests.smpc_protocol.harness import evaluate, one_of_two_runs, truncation_failure_bound

MODULUS = 2**64


def signed(value: int) -> int:
    value %= MODULUS
    return value - MODULUS if value >= 2**63 else value


def ring_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Weights that encode to arbitrary 24-bit ring elements (k / 2^16 is exact in float32), biases to
    arbitrary 24-bit elements at 32 fractional bits, the scale biases are stored at."""
    with torch.no_grad():
        module.weight.copy_(torch.randint(-(2**23), 2**23, module.weight.shape, generator=generator) / 2.0**16)
        module.bias.copy_(torch.randint(-(2**23), 2**23, module.bias.shape, generator=generator) / 2.0**32)


def linear_reference(inputs: torch.Tensor, module: nn.Linear) -> torch.Tensor:
    """x W^T + b mod 2^64 with Python integers, on ring values (weights at 16, biases at 32 fractional bits)."""
    weight = ring.encode(module.weight.detach()).tolist()
    bias = ring.encode(module.bias.detach(), 2 * ring.FRACTION_BITS).tolist()
    rows = [
        [signed(b + sum(x * w for x, w in zip(row, weight[o], strict=True))) for o, b in enumerate(bias)]
        for row in inputs.tolist()
    ]
    return torch.tensor(rows, dtype=torch.int64)


def conv_reference(inputs: torch.Tensor, module: nn.Conv2d) -> torch.Tensor:
    """A zero-padded, strided convolution mod 2^64 with Python integers, on ring values."""
    weight = ring.encode(module.weight.detach()).tolist()
    bias = ring.encode(module.bias.detach(), 2 * ring.FRACTION_BITS).tolist()
    (pad_h, pad_w), (stride_h, stride_w) = module.padding, module.stride
    kernel_h, kernel_w = module.kernel_size
    batch, channels, height, width = inputs.shape
    values = inputs.tolist()

    def pixel(n, c, i, j):
        i, j = i - pad_h, j - pad_w
        return values[n][c][i][j] if 0 <= i < height and 0 <= j < width else 0

    out_h = (height + 2 * pad_h - kernel_h) // stride_h + 1
    out_w = (width + 2 * pad_w - kernel_w) // stride_w + 1
    result = [
        [
            [
                [
                    signed(
                        bias[o]
                        + sum(
                            pixel(n, c, i * stride_h + a, j * stride_w + b) * weight[o][c][a][b]
                            for c in range(channels)
                            for a in range(kernel_h)
                            for b in range(kernel_w)
                        )
                    )
                    for j in range(out_w)
                ]
                for i in range(out_h)
            ]
            for o in range(module.out_channels)
        ]
        for n in range(batch)
    ]
    return torch.tensor(result, dtype=torch.int64)


@pytest.fixture
def untruncated(monkeypatch):
    """The engine without its truncation, so that a layer's output is the bare Beaver product (plus bias)."""
    monkeypatch.setattr(ring, "truncate", lambda share_value, party, bits=ring.FRACTION_BITS: share_value)


@pytest.mark.usefixtures("untruncated")
def test_it_computes_a_linear_layer_exactly_in_the_ring():
    generator = torch.Generator().manual_seed(2)
    layer = nn.Linear(7, 5)
    ring_weights(layer, generator)
    inputs = torch.cat([ring.random_ring((6, 7)), torch.tensor([[-(2**63)] * 7, [2**63 - 1] * 7])])

    outputs, _ = evaluate(hosting.split_model(nn.Sequential(layer), (7,)), inputs)

    assert torch.equal(outputs, linear_reference(inputs, layer))


@pytest.mark.usefixtures("untruncated")
def test_it_computes_a_padded_strided_convolution_exactly_in_the_ring():
    generator = torch.Generator().manual_seed(3)
    layer = nn.Conv2d(2, 3, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2))
    ring_weights(layer, generator)
    inputs = ring.random_ring((2, 2, 5, 6))

    outputs, _ = evaluate(hosting.split_model(nn.Sequential(layer), (2, 5, 6)), inputs)

    expected = conv_reference(inputs, layer)
    assert expected.shape == (2, 3, 3, 9)
    assert torch.equal(outputs, expected)


@pytest.mark.parametrize(
    ("layer", "input_shape"),
    [
        (nn.Linear(6, 4), (6,)),
        (nn.Conv2d(3, 2, kernel_size=3, stride=2, padding=1), (3, 7, 8)),
        (nn.Conv2d(1, 4, kernel_size=(2, 3), stride=(1, 2), padding=(2, 0)), (1, 5, 9)),
    ],
)
def test_it_is_exact_on_integers_through_truncation(layer, input_shape):
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        layer.weight.copy_(torch.randint(-5, 6, layer.weight.shape, generator=generator))
        layer.bias.copy_(torch.randint(-20, 21, layer.bias.shape, generator=generator))
    model = nn.Sequential(layer)
    inputs = torch.randint(-50, 51, (3, *input_shape), generator=generator).to(torch.float32)
    expected = model(inputs).detach().to(torch.float64)
    shared = hosting.split_model(model, input_shape)
    assert truncation_failure_bound(model, inputs) < 3e-5

    def exact() -> bool:
        outputs, _ = evaluate(shared, ring.encode(inputs))
        # A product of integers has no fractional bits, so truncating its shares loses nothing.
        return torch.equal(ring.decode(outputs), expected)

    assert one_of_two_runs(exact)


@pytest.mark.parametrize(
    ("module", "input_shape"),
    [
        (nn.Linear(5, 3, bias=False), (5,)),
        (nn.Conv2d(2, 3, kernel_size=3, bias=False), (2, 4, 5)),
        (nn.Conv2d(2, 3, kernel_size=(3, 1), stride=(2, 3), padding=(1, 2), bias=False), (2, 6, 7)),
        (nn.Conv2d(1, 1, kernel_size=1, bias=False), (1, 3, 3)),
    ],
)
def test_product_is_the_layer_without_bias(module, input_shape):
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        module.weight.copy_(torch.randint(-9, 10, module.weight.shape, generator=generator))
    inputs = torch.randint(-9, 10, (2, *input_shape), generator=generator).to(torch.float64)
    layer = ModelSpec.from_sequential(nn.Sequential(module), input_shape).layers[0]
    if isinstance(module, nn.Conv2d):
        expected = functional.conv2d(inputs, module.weight.double(), stride=module.stride, padding=module.padding)
    else:
        expected = functional.linear(inputs, module.weight.double())

    result = maps.product(
        layer, inputs.to(torch.int64), maps.weight_matrix(module).to(torch.int64), tuple(expected.shape[1:])
    )

    assert result.dtype == torch.int64
    assert torch.equal(result, expected.detach().to(torch.int64))
