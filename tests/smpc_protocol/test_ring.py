"""Fixed-point encoding and additive sharing in the ring of integers mod 2^64."""

import math

import pytest
import torch

from smpc_protocol import ring
from tests.smpc_protocol.harness import assert_uniform_bits

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def random_int64(count: int) -> torch.Tensor:
    return ring.random_ring((count,))


def test_it_round_trips_reals_within_half_a_unit():
    generator = torch.Generator().manual_seed(1)
    values = torch.cat(
        [
            (torch.rand(10_000, dtype=torch.float64, generator=generator) * 2 - 1) * ring.MAX_ABS_VALUE,
            torch.randn(10_000, dtype=torch.float64, generator=generator),
            torch.tensor([0.0, 2.0**-17, -(2.0**-17), 2.0**-16, 1.5, -1.5, ring.MAX_ABS_VALUE - 1]),
        ]
    )

    decoded = ring.decode(ring.encode(values))

    assert decoded.dtype == torch.float64
    assert float((decoded - values).abs().max()) <= 2.0**-17


def test_it_encodes_float32_and_integer_tensors():
    assert ring.encode(torch.tensor([1.0, -0.5], dtype=torch.float32)).tolist() == [2**16, -(2**15)]
    assert ring.encode(torch.tensor([3, -7])).tolist() == [3 * 2**16, -7 * 2**16]
    assert ring.encode(torch.tensor([3.0]), fraction_bits=32).tolist() == [3 * 2**32]


def test_it_reads_the_ring_as_signed_when_decoding():
    assert ring.decode(torch.tensor([-(2**16), 2**15, -1])).tolist() == [-1.0, 0.5, -(2.0**-16)]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2.0**46, -(2.0**46), 1e300])
def test_it_refuses_values_it_cannot_encode(bad):
    values = torch.tensor([0.0, 1.0, bad], dtype=torch.float64)

    with pytest.raises(ValueError, match="finite|smaller"):
        ring.encode(values)


def test_it_accepts_values_just_inside_the_range():
    largest = 2.0**46 - 1
    assert ring.encode(torch.tensor([largest, -largest], dtype=torch.float64)).tolist() == [
        2**62 - 2**16,
        -(2**62) + 2**16,
    ]


def test_it_encodes_an_empty_tensor():
    assert ring.encode(torch.zeros(0)).shape == (0,)


def test_it_reconstructs_any_ring_element_exactly():
    secrets = torch.cat([random_int64(10_000), torch.tensor([INT64_MIN, INT64_MAX, 0, 1, -1])])

    first, second = ring.share(secrets)

    assert first.dtype == second.dtype == torch.int64
    assert torch.equal(ring.reconstruct(first, second), secrets)
    assert torch.equal(ring.reconstruct(second, first), secrets)


def test_it_shares_tensors_of_any_shape():
    secrets = random_int64(24).reshape(2, 3, 4)

    first, second = ring.share(secrets)

    assert first.shape == second.shape == (2, 3, 4)
    assert torch.equal(ring.reconstruct(first, second), secrets)
    assert ring.share(torch.zeros(0, 5, dtype=torch.int64))[0].shape == (0, 5)


@pytest.mark.parametrize("secret", [0, 1, -1, INT64_MIN, 2**40 + 12345])
def test_each_share_alone_is_uniform(secret):
    secrets = torch.full((4096,), secret, dtype=torch.int64)

    first, second = ring.share(secrets)

    assert_uniform_bits(first, "party 0's share of a constant")
    assert_uniform_bits(second, "party 1's share of a constant")
    assert torch.equal(first + second, secrets)


def test_fresh_shares_of_the_same_secret_differ():
    secrets = torch.zeros(64, dtype=torch.int64)

    # Two draws of 64 uniform words coincide with probability 2^-4096.
    assert not torch.equal(ring.share(secrets)[0], ring.share(secrets)[0])


BELOW_LIMIT = ring.MAX_ABS_VALUE - 2.0**-16


@pytest.mark.parametrize(
    "values",
    [
        torch.tensor([0.0, BELOW_LIMIT, -BELOW_LIMIT, 1.5], dtype=torch.float64),
        torch.tensor([[3, -7]]),
        torch.zeros(0),
        torch.tensor([BELOW_LIMIT], dtype=torch.float32).nextafter(torch.tensor(0.0)),
    ],
    ids=["floats up to the limit", "integers", "empty", "float32 below the limit"],
)
def test_check_range_accepts_what_encrypted_inference_can_take(values):
    ring.check_range(values)


@pytest.mark.parametrize(
    "value", [ring.MAX_ABS_VALUE, -ring.MAX_ABS_VALUE, 2.0**40, -1e300, float("nan"), float("inf"), float("-inf")]
)
def test_check_range_refuses_what_would_wrap_with_a_message_naming_the_limit(value):
    values = torch.tensor([[0.5, value]])

    with pytest.raises(ring.OutOfRange, match=r"smaller than 2\^29 = 536870912 in magnitude \(ring.MAX_ABS_VALUE"):
        ring.check_range(values)
    assert issubclass(ring.OutOfRange, ValueError)


def test_check_range_names_what_it_checks_and_the_largest_value():
    with pytest.raises(ring.OutOfRange, match=r"^the image must be .* the largest here is 1\.07374e\+09$"):
        ring.check_range(torch.tensor([2.0**30, 1.0]), "the image")
