"""`ring.truncate`: each party divides its own share by 2^16, and the sum is within one unit of x / 2^16
unless the two shares wrap around the ring.

With party 0's share uniform, the shares of x wrap (their sum as integers is x -+ 2^64) for exactly |x|
(or |x| - 1) of the 2^64 values of that share, so a truncation fails with probability |x| / 2^64. That is
below the docstring's bound of 2^(k + 1 - 64) for |x| < 2^k, by a factor of two.
"""

import math

import pytest
import torch

from smpc_protocol import ring

SAMPLES = 100_000


def truncated(secrets: torch.Tensor) -> torch.Tensor:
    first, second = ring.share(secrets)
    return ring.reconstruct(ring.truncate(first, 0), ring.truncate(second, 1))


def errors(secrets: torch.Tensor, results: torch.Tensor) -> torch.Tensor:
    """How far each result is from floor(x / 2^16) (an arithmetic shift), in units."""
    return results - (secrets >> ring.FRACTION_BITS)


def test_it_is_within_one_unit_whenever_the_shares_do_not_wrap():
    secrets = ring.random_ring((SAMPLES,)) >> 2  # |x| < 2^61: about one sample in eight wraps
    first, second = ring.share(secrets)
    # Two shares of the same sign wrap exactly when their int64 sum has the other sign.
    wrapped = ((first >= 0) & (second >= 0) & (secrets < 0)) | ((first < 0) & (second < 0) & (secrets >= 0))

    off = errors(secrets, ring.reconstruct(ring.truncate(first, 0), ring.truncate(second, 1)))

    assert int(wrapped.sum()) > 0
    assert bool((off[~wrapped].abs() <= 1).all())
    # A wrap costs 2^64 / 2^16 = 2^48 units, so a failure is never a near miss.
    assert bool((off[wrapped].abs() >= 2**47).all())


def test_it_is_exact_on_multiples_of_the_unit():
    secrets = (ring.random_ring((SAMPLES,)) >> 47) << ring.FRACTION_BITS  # |x| <= 2^32

    off = errors(secrets, truncated(secrets))

    # Only a wrap makes an error here, with probability at most 2^-32 per sample: 1e5 samples expect
    # 2.4e-5 of them, and three or more happen with probability below (2.4e-5)^3 / 3! < 1e-14.
    assert int((off != 0).sum()) <= 2


def test_it_rarely_fails_for_products_of_activations_below_2_to_the_10():
    secrets = ring.random_ring((SAMPLES,)) >> 21  # |x| <= 2^42: 2^10 with 32 fractional bits

    off = errors(secrets, truncated(secrets))

    # Each sample fails with probability at most 2^-22, so the count of failures is at most Binomial(1e5, 2^-22)
    # (mean 0.024): five or more has probability at most 0.024^5 / 5! < 1e-10.
    assert int((off.abs() > 1).sum()) <= 4


@pytest.mark.parametrize(("secret", "k"), [(2**60 - 1, 60), (-(2**60 - 1), 60), (2**62 - 1, 62)])
def test_its_failure_rate_is_the_magnitude_over_2_to_the_64(secret, k):
    secrets = torch.full((SAMPLES,), secret, dtype=torch.int64)

    rate = float((errors(secrets, truncated(secrets)).abs() > 1).double().mean())

    # Hoeffding: the rate over 1e5 samples is off by t or more with probability at most 2 exp(-2 n t^2) = 1e-10.
    tolerance = math.sqrt(math.log(2 / 1e-10) / (2 * SAMPLES))
    assert rate > 0
    assert abs(rate - abs(secret) / 2.0**64) < tolerance
    # The docstring's bound holds (the rate is about half of it).
    assert rate < 2.0 ** (k + 1 - 64) - tolerance
