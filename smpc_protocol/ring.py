"""Fixed-point numbers in the ring of integers mod 2^64 (int64 tensors wrap), and additive sharing.

A real number v is stored as round(v * 2^16). Sums and products of int64 tensors wrap around mod 2^64,
which is exactly the ring arithmetic the shares need; a product of two fixed-point numbers carries 32
fractional bits and is brought back to 16 by `truncate`.
"""

import math
import os
from collections.abc import Callable

import torch

FRACTION_BITS = 16
# Plaintext values must stay well inside the ring: |v| * 2^32 (a product before truncation) < 2^62.
MAX_ABS_VALUE = 2.0**29
_INT64 = torch.int64


class OutOfRange(ValueError):
    """Values an encrypted model cannot take: not finite, or MAX_ABS_VALUE or more in magnitude."""


def check_range(values: torch.Tensor, what: str = "inputs") -> None:
    """OutOfRange unless every value is finite and smaller than MAX_ABS_VALUE in magnitude.

    Larger inputs do not fail the protocol: its products wrap around the ring and the answer is garbage.
    The client checks before sending anything (workers hold uniform shares and cannot tell).
    """
    limit = f"smaller than 2^{int(math.log2(MAX_ABS_VALUE))} = {int(MAX_ABS_VALUE)} in magnitude"
    floats = values.detach().to(torch.float64)
    if not bool(torch.isfinite(floats).all()):
        raise OutOfRange(f"{what} must be finite numbers {limit} (ring.MAX_ABS_VALUE)")
    if floats.numel() and float(floats.abs().max()) >= MAX_ABS_VALUE:
        raise OutOfRange(
            f"{what} must be {limit} (ring.MAX_ABS_VALUE, the fixed-point range of encrypted inference); "
            f"the largest here is {float(floats.abs().max()):g}"
        )


def encode(values: torch.Tensor, fraction_bits: int = FRACTION_BITS) -> torch.Tensor:
    """Real numbers as fixed-point ring elements; ValueError for NaN, infinities and values out of range."""
    scaled = torch.round(values.to(torch.float64) * float(2**fraction_bits))
    if not bool(torch.isfinite(scaled).all()):
        raise ValueError("values must be finite numbers")
    if scaled.numel() and float(scaled.abs().max()) >= 2.0**62:
        raise ValueError(f"values must be smaller than {2.0 ** (62 - fraction_bits):g} in magnitude")
    return scaled.to(_INT64)


def decode(values: torch.Tensor, fraction_bits: int = FRACTION_BITS) -> torch.Tensor:
    """Fixed-point ring elements back to real numbers (float64), reading the ring as signed."""
    return values.to(torch.float64) / float(2**fraction_bits)


def ring_from_bytes(shape: tuple[int, ...] | torch.Size, draw: Callable[[int], bytes]) -> torch.Tensor:
    """Ring elements of `shape` read from `draw(n)`, a source of n uniform random bytes."""
    count = math.prod(int(size) for size in shape)
    if count == 0:
        return torch.zeros(shape, dtype=_INT64)
    return torch.frombuffer(bytearray(draw(8 * count)), dtype=_INT64).reshape(shape)


def random_ring(shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Uniform ring elements from the operating system's cryptographically secure generator."""
    return ring_from_bytes(shape, os.urandom)


def share(secret: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two additive shares of a ring tensor: each alone is uniform, their sum is the secret."""
    first = random_ring(secret.shape)
    return first, secret - first


def reconstruct(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The secret behind two additive shares."""
    return first + second


def truncate(share_value: torch.Tensor, party: int, bits: int = FRACTION_BITS) -> torch.Tensor:
    """One party's share of the secret divided by 2^bits, computed locally (SecureML's two-party method).

    The result is within one unit of the exact quotient unless the shares wrap in an unlucky way: for a
    secret with |x| < 2^k the failure probability is at most 2^(k + 1 - 64) per element (README:
    "Encrypted inference"). For activations below 2^10 (with 32 fractional bits, k = 42) that is 2^-21.
    """
    if party == 0:
        return share_value >> bits
    return -((-share_value) >> bits)
