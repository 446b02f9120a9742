"""The crypto provider's bundles: each party's half, dealt on its own from the session seed, fits the other's."""

import os

import pytest
import torch
from torch import nn

from smpc_protocol import hosting, maps, randomness
from smpc_protocol.randomness import CARRY_LEVELS, and_triple_name
from smpc_protocol.spec import RELU, WEIGHTED
from tests.smpc_protocol.harness import assert_uniform_bits

BATCH = 3


@pytest.fixture(scope="module")
def shared() -> hosting.SharedModel:
    torch.manual_seed(20)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 5), nn.ReLU())
    return hosting.split_model(model, (2, 4, 4))


def bundles(shared: hosting.SharedModel, seed: bytes, provider_part=None, batch: int = BATCH):
    return tuple(
        randomness.party_bundle(
            spec=shared.spec,
            provider_part=shared.provider_part if provider_part is None else provider_part,
            batch=batch,
            seed=seed,
            party=party,
        )
        for party in (0, 1)
    )


def layers_of(shared: hosting.SharedModel, kinds) -> list[int]:
    return [index for index, layer in enumerate(shared.spec.layers) if layer.kind in kinds]


def test_it_deals_exactly_the_tensors_the_spec_needs(shared):
    expected = randomness.bundle_shapes(shared.spec, BATCH)

    for bundle in bundles(shared, os.urandom(32)):
        assert {name: tuple(tensor.shape) for name, tensor in bundle.items()} == expected
        assert {tensor.dtype for tensor in bundle.values()} == {torch.int64}


def test_its_beaver_pairs_multiply_to_the_weight_mask_product(shared):
    zero, one = bundles(shared, os.urandom(32))

    for index in layers_of(shared, WEIGHTED):
        mask = shared.provider_part[hosting.tensor_name(index, hosting.WEIGHT_MASK)]
        opened_a = zero[f"{index}.A"] + one[f"{index}.A"]
        expected = maps.product(shared.spec.layers[index], opened_a, mask, shared.spec.input_shape_of(index + 1))
        assert torch.equal(zero[f"{index}.C"] + one[f"{index}.C"], expected)


def test_its_and_triples_hold(shared):
    zero, one = bundles(shared, os.urandom(32))

    for index in layers_of(shared, (RELU,)):
        for level, words in enumerate(CARRY_LEVELS):
            for word in words:
                u, v, w = (
                    zero[and_triple_name(index, level, word, part)] ^ one[and_triple_name(index, level, word, part)]
                    for part in "uvw"
                )
                assert torch.equal(w, u & v)


def test_its_random_bit_is_one_bit_shared_both_ways_with_its_mask_product(shared):
    zero, one = bundles(shared, os.urandom(32))

    for index in layers_of(shared, (RELU,)):
        bit = zero[f"{index}.r"] + one[f"{index}.r"]
        assert set(bit.unique().tolist()) <= {0, 1}
        for half in (zero, one):
            assert set(half[f"{index}.r_bit"].unique().tolist()) <= {0, 1}
        assert torch.equal(zero[f"{index}.r_bit"] ^ one[f"{index}.r_bit"], bit)
        assert torch.equal(zero[f"{index}.rA"] + one[f"{index}.rA"], bit * (zero[f"{index}.A"] + one[f"{index}.A"]))


def test_the_same_seed_deals_the_same_bundle(shared):
    seed = os.urandom(32)

    for first, second in zip(bundles(shared, seed), bundles(shared, seed), strict=True):
        assert first.keys() == second.keys()
        assert all(torch.equal(first[name], second[name]) for name in first)


def random_bits(bundle: dict[str, torch.Tensor]) -> torch.Tensor:
    """All of a bundle's XOR shares of random bits, in one flat tensor."""
    return torch.cat([tensor.reshape(-1) for name, tensor in bundle.items() if name.endswith(".r_bit")])


def test_different_seeds_deal_different_bundles(shared):
    first, second = bundles(shared, os.urandom(32)), bundles(shared, os.urandom(32))

    for party in (0, 1):
        for name, tensor in first[party].items():
            if not name.endswith(".r_bit"):
                # Independent ring tensors coincide with probability at most 2^-64 per element.
                assert not torch.equal(tensor, second[party][name]), name
        # 3 * (48 + 5) independent bits coincide with probability 2^-159.
        assert not torch.equal(random_bits(first[party]), random_bits(second[party]))


def test_party_0s_half_is_the_seed_stream_alone(shared):
    seed = os.urandom(32)
    other_mask = {name: mask + 1 for name, mask in shared.provider_part.items()}

    zero, one = bundles(shared, seed)
    zero_again, one_again = bundles(shared, seed, provider_part=other_mask)

    assert all(torch.equal(zero[name], zero_again[name]) for name in zero)
    # Party 1's halves of the products with the mask carry the difference.
    assert not all(torch.equal(one[name], one_again[name]) for name in one)


@pytest.mark.parametrize("party", [-1, 2, "0"])
def test_it_refuses_a_party_other_than_0_or_1(shared, party):
    with pytest.raises(ValueError, match="party"):
        randomness.party_bundle(
            spec=shared.spec, provider_part=shared.provider_part, batch=1, seed=os.urandom(32), party=party
        )


# The tests below fail when the provider's randomness is broken in ways that keep every answer right and
# every half uniform (issue 15's mutation list): true values that are zero, the same in every session, or
# determined by party 0's half. Each reads the true values from both halves, which no worker holds.
MANY = 64  # inputs per batch, so that each value tensor is a sample a frequency test can judge


def true_values(zero: dict[str, torch.Tensor], one: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The values the halves are shares of (masks and triples' u and v; products follow from them)."""
    values = {}
    for name in zero:
        if name.endswith((".u", ".v", ".r_bit")):
            values[name] = zero[name] ^ one[name]
        elif name.endswith((".A", ".r")):
            values[name] = zero[name] + one[name]
    return values


def assert_uniform_values(values: dict[str, torch.Tensor], what: str) -> None:
    assert values
    for name, value in values.items():
        bit = name.endswith((".r", ".r_bit"))
        assert_uniform_bits(value, f"{what} '{name}'", bits=1 if bit else 64)


def test_every_value_it_deals_is_uniform(shared):
    values = true_values(*bundles(shared, os.urandom(32), batch=MANY))

    assert {name.rsplit(".", 1)[1] for name in values} == {"u", "v", "r_bit", "r", "A"}
    assert_uniform_values(values, "the true")


def test_two_sessions_deal_unrelated_values(shared):
    first = true_values(*bundles(shared, os.urandom(32), batch=MANY))
    second = true_values(*bundles(shared, os.urandom(32), batch=MANY))

    differences = {
        name: value - second[name] if name.endswith(".A") else value ^ second[name] for name, value in first.items()
    }
    assert_uniform_values(differences, "two sessions' differences of")


def test_party_0s_half_does_not_determine_party_1s(shared):
    # Two seeds that share only the part party 0's half is drawn from.
    key = os.urandom(randomness.PARTY_ZERO_KEY_BYTES)
    rest = randomness.SEED_BYTES - randomness.PARTY_ZERO_KEY_BYTES
    first = bundles(shared, key + os.urandom(rest), batch=MANY)
    second = bundles(shared, key + os.urandom(rest), batch=MANY)

    assert all(torch.equal(first[0][name], second[0][name]) for name in first[0])
    # The same half for party 0, and unrelated values behind it: party 1's halves differ by the values'.
    for name, tensor in first[1].items():
        if not name.endswith(".r_bit"):
            assert not torch.equal(tensor, second[1][name]), name
    differences = {
        name: value - second_value if name.endswith(".A") else value ^ second_value
        for (name, value), second_value in zip(true_values(*first).items(), true_values(*second).values(), strict=True)
    }
    assert_uniform_values(differences, "the differences, behind one half of party 0, of")


@pytest.mark.parametrize("length", [16, 31])
def test_it_refuses_a_seed_shorter_than_a_session_seed(shared, length):
    with pytest.raises(ValueError, match="32 bytes"):
        randomness.party_bundle(
            spec=shared.spec, provider_part=shared.provider_part, batch=1, seed=os.urandom(length), party=1
        )


def test_party_0s_half_drawn_from_its_key_alone_is_the_half_dealt_to_it(shared):
    seed = os.urandom(randomness.SEED_BYTES)
    dealt, _ = bundles(shared, seed)

    drawn = randomness.party_zero_bundle(spec=shared.spec, batch=BATCH, key=seed[: randomness.PARTY_ZERO_KEY_BYTES])

    assert drawn.keys() == dealt.keys()
    assert all(torch.equal(drawn[name], dealt[name]) for name in dealt)


def test_it_refuses_a_party_0_key_of_another_length(shared):
    with pytest.raises(ValueError, match="16 bytes"):
        randomness.party_zero_bundle(spec=shared.spec, batch=1, key=os.urandom(32))
