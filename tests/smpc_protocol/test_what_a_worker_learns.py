"""What a worker can work out from its view, with the tests written so that a broken protocol fails them.

A worker's view is its own input share, its own half of the provider's randomness, and the peer's message of
every round; from its own message and the peer's it holds each round's opened value. Every share in that view
is uniform however the protocol is broken (a share of anything is), so these tests look at how the opened
values relate to the secrets instead: with the secrets and both shares known to the test, each opened value
minus (or XOR) the operand it opens is the mask that hid it, and that mask must be uniform and fresh in every
session. Zeroed AND triples, a zeroed sign mask, a zeroed Beaver mask or masks reused across sessions make it
constant, and these tests fail (the mutation list of issue 15); the answers stay right, so only tests like
these can tell.
"""

import pytest
import torch
from torch import nn

from smpc_protocol import engine, hosting, ring
from smpc_protocol.randomness import CARRY_LEVELS, CARRY_SHIFTS, and_triple_name
from tests.smpc_protocol.harness import assert_uniform_bits, relu_only, run_parties

BATCH, WIDTH = 64, 32
SIGN_ROUND = len(CARRY_LEVELS)  # the ReLU's rounds: one per carry level, then the masked sign "c"


def secrets(kind: str) -> torch.Tensor:
    """Fixed-point activations of one sign pattern (a fixed seed: the masks, not the secrets, are random)."""
    generator = torch.Generator().manual_seed(15)
    magnitudes = torch.randint(1, 2**30, (BATCH, WIDTH), generator=generator)
    if kind == "negative":
        return -magnitudes
    if kind == "positive":
        return magnitudes
    return magnitudes * (torch.randint(0, 2, (BATCH, WIDTH), generator=generator) * 2 - 1)


def run_relu(values: torch.Tensor):
    """One ReLU session on `values`: (party 0's input share, party 1's, both parties' runs)."""
    shared = relu_only((WIDTH,))
    shares = ring.share(values)
    runs = run_parties(specs=(shared.spec, shared.spec), parts=({}, {}), provider_part={}, input_shares=shares)
    assert [run.error for run in runs] == [None, None]
    assert torch.equal(ring.reconstruct(runs[0].output, runs[1].output), values.clamp(min=0))
    return (*shares, runs)


def opened(runs, round_index: int, name: str) -> torch.Tensor:
    """The value both workers hold after a round: party 0 sent its share to party 1 and received party 1's."""
    from_zero, from_one = runs[1].received[round_index][name], runs[0].received[round_index][name]
    return from_zero + from_one if name == "x" else from_zero ^ from_one


def and_operands(x0: torch.Tensor, x1: torch.Tensor) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The plain words each AND round of the ReLU combines, per carry level: the Kogge-Stone prefix in clear.

    The first round does the prefix's first two steps: each of its ANDs takes a word of party 0's share
    alone and a word of party 1's alone.
    """
    a1, b1 = x0 << 1, x1 << 1
    levels = [{"g": (x0, x1), "ga": (x0 & a1, b1), "gb": (a1, x1 & b1), "pa": (x0, b1), "pb": (a1, x1)}]
    carry = (x0 & x1) ^ ((x0 ^ x1) & ((x0 & x1) << 1))
    propagate = (x0 ^ x1) & ((x0 ^ x1) << 1)
    for level, shift in enumerate(CARRY_SHIFTS[1:], start=1):
        pairs = {"g": (propagate, carry << shift)}
        if "p" in CARRY_LEVELS[level]:
            pairs["p"] = (propagate, propagate << shift)
        levels.append(pairs)
        carry = carry ^ (propagate & (carry << shift))
        propagate = propagate & (propagate << shift) if "p" in pairs else propagate
    return levels


def and_masks(x0: torch.Tensor, x1: torch.Tensor, runs) -> dict[str, torch.Tensor]:
    """What hid each operand of each AND round: the opened `d` and `e` XOR the plain operands."""
    masks = {}
    for level, pairs in enumerate(and_operands(x0, x1)):
        for word, (left, right) in pairs.items():
            masks[f"level {level} {word}.d"] = opened(runs, level, f"{word}.d") ^ left
            masks[f"level {level} {word}.e"] = opened(runs, level, f"{word}.e") ^ right
    return masks


def is_negative(values: torch.Tensor) -> torch.Tensor:
    return (values < 0).to(torch.int64)


@pytest.fixture(scope="module")
def mixed_session():
    values = secrets("mixed")
    return values, run_relu(values)


def test_the_masks_read_from_the_view_are_the_providers_and_triples(mixed_session):
    # A check of this file's own reading of the rounds: without it, a wrong `and_operands` could make
    # the tests below pass or fail for the wrong reason.
    _, (x0, x1, runs) = mixed_session
    bundles = (runs[0].bundle, runs[1].bundle)

    masks = and_masks(x0, x1, runs)

    assert len(masks) == 2 * sum(len(words) for words in CARRY_LEVELS)
    for level, words in enumerate(CARRY_LEVELS):
        for word in words:
            for side, part in (("d", "u"), ("e", "v")):
                name = and_triple_name(0, level, word, part)
                assert torch.equal(masks[f"level {level} {word}.{side}"], bundles[0][name] ^ bundles[1][name])


def test_every_and_round_opens_its_operands_under_uniform_masks(mixed_session):
    # Zeroed AND triples open every operand in clear: the first round opens both input shares.
    _, (x0, x1, runs) = mixed_session

    for name, mask in and_masks(x0, x1, runs).items():
        assert_uniform_bits(mask, f"the mask of {name}")


def test_no_two_and_operands_in_a_session_share_a_mask(mixed_session):
    # A triple used twice (for the g and p words of one level, say) still computes both ANDs right, but
    # the XOR of the two opened words is then the XOR of the two operands.
    _, (x0, x1, runs) = mixed_session
    masks = list(and_masks(x0, x1, runs).items())

    for index, (name, mask) in enumerate(masks):
        for other_name, other in masks[index + 1 :]:
            # Independent uniform words coincide with probability 2^-64 each: 378 pairs of 2,048.
            assert not bool((mask == other).any()), f"{name} and {other_name} share mask words"


def test_no_worker_can_rebuild_the_input_from_its_share_and_the_first_and_round(mixed_session):
    values, (x0, x1, runs) = mixed_session
    # The first round's `d` hides party 0's share, `e` party 1's; each worker adds what it sees to its own.
    guesses = {0: x0 + opened(runs, 0, "g.e"), 1: opened(runs, 0, "g.d") + x1}

    for party, guess in guesses.items():
        # Right by chance only where a uniform 64-bit mask is 0: 2,048 * 2^-64.
        assert not bool((guess == values).any()), f"party {party} rebuilt inputs from its view"


@pytest.mark.parametrize("kind", ["mixed", "negative", "positive"])
def test_the_opened_sign_bits_are_independent_of_the_signs(kind):
    # With a zeroed sign mask the opened bit is the sign itself: all 1 for negative inputs, all 0 for positive.
    values = secrets(kind)
    *_, runs = run_relu(values)
    signs = opened(runs, SIGN_ROUND, "c")

    assert_uniform_bits(signs, f"the opened sign bits of {kind} inputs", bits=1)
    assert_uniform_bits(signs ^ is_negative(values), f"the opened sign bits of {kind} inputs XOR the signs", bits=1)


def test_the_relu_opens_its_input_under_a_uniform_mask(mixed_session):
    # The Beaver product s * x opens x - A in the first round; with A zeroed it would open x.
    values, (_, _, runs) = mixed_session

    assert_uniform_bits(opened(runs, 0, "x") - values, "the ReLU's opened input minus the input")


def test_a_linear_layer_opens_its_input_under_a_uniform_mask():
    torch.manual_seed(15)
    shared = hosting.split_model(nn.Sequential(nn.Linear(WIDTH, 4)), (WIDTH,))
    values = secrets("mixed")
    runs = run_parties(
        specs=(shared.spec, shared.spec),
        parts=shared.worker_parts,
        provider_part=shared.provider_part,
        input_shares=ring.share(values),
    )
    assert [run.error for run in runs] == [None, None]

    assert_uniform_bits(opened(runs, 0, "x") - values, "the linear layer's opened input minus the input")


def test_two_sessions_on_the_same_inputs_mask_them_independently(mixed_session):
    # Triples, sign masks or Beaver masks reused across sessions would make these differences constant.
    values, (x0, x1, first) = mixed_session
    y0, y1, second = run_relu(values)

    first_masks, second_masks = and_masks(x0, x1, first), and_masks(y0, y1, second)
    for name, mask in first_masks.items():
        assert_uniform_bits(mask ^ second_masks[name], f"the masks of {name} in two sessions, XORed")
    # The same inputs, so the sign bits opened differ only by the two sessions' masks, and the inputs
    # opened in the first round only by the two Beaver masks.
    assert_uniform_bits(
        opened(first, SIGN_ROUND, "c") ^ opened(second, SIGN_ROUND, "c"), "two sessions' opened signs, XORed", bits=1
    )
    assert_uniform_bits(opened(first, 0, "x") - opened(second, 0, "x"), "two sessions' opened ReLU inputs, subtracted")


def test_the_rounds_read_here_are_the_relus():
    _, _, runs = run_relu(secrets("positive"))

    assert engine.count_rounds(relu_only((WIDTH,)).spec) == SIGN_ROUND + 1
    for run in runs:
        assert [set(message) - {engine.AGREEMENT} for message in run.received] == [
            {"x", *(f"{word}.{side}" for word in ("g", "ga", "gb", "pa", "pb") for side in "de")},
            *({"g.d", "g.e", "p.d", "p.e"} for _ in CARRY_SHIFTS[1:-1]),
            {"g.d", "g.e"},
            {"c"},
        ]
