"""ReLU on shares: the sign from a Kogge-Stone carry on XOR-shared bits, made arithmetic with a shared bit.

It has no truncation, so it is exact: every test here is deterministic whatever the shares are.
"""

import torch

from smpc_protocol import engine, ring
from tests.smpc_protocol.harness import evaluate, relu_only, run_parties

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EDGES = [0, 1, -1, 2, -2, 2**40, -(2**40), 2**62 - 1, -(2**62 - 1), 2**62, -(2**62), INT64_MAX, INT64_MIN]


def test_it_is_exact_on_edges_and_random_ring_values():
    secrets = torch.cat([torch.tensor(EDGES * 4, dtype=torch.int64), ring.random_ring((8 * 13 - 4 * len(EDGES),))])
    secrets = secrets.reshape(8, 13)

    outputs, runs = evaluate(relu_only((13,)), secrets)

    assert torch.equal(outputs, secrets.clamp(min=0))
    assert runs[0].rounds == runs[1].rounds == engine.count_rounds(relu_only((13,)).spec) == 7


def test_it_is_exact_on_fixed_point_activations():
    values = torch.tensor([[0.0, 2.0**-16, -(2.0**-16), 1.0, -1.0, 1000.5, -1000.5, 3.25]])

    outputs, _ = evaluate(relu_only((8,)), ring.encode(values))

    assert ring.decode(outputs).tolist() == [[0.0, 2.0**-16, 0.0, 1.0, 0.0, 1000.5, 0.0, 3.25]]


def test_it_keeps_channels_and_pixels_apart():
    secrets = ring.random_ring((3, 2, 4, 5))

    outputs, _ = evaluate(relu_only((2, 4, 5)), secrets)

    assert outputs.shape == (3, 2, 4, 5)
    assert torch.equal(outputs, secrets.clamp(min=0))


def test_it_is_exact_when_the_shares_carry_through_every_bit():
    # Shares chosen, not drawn: these make the longest carries the Kogge-Stone prefix has to get right.
    pairs = [
        (INT64_MAX, 1),  # carries into bit 63: the sum is INT64_MIN
        (1, INT64_MAX),
        (-1, 1),  # carries out of bit 63: the sum is 0
        (-1, 0),
        (2**62, 2**62),
        (2**62 - 1, 1),
        (INT64_MIN, INT64_MIN),
        (INT64_MIN, INT64_MAX),
        (0x5555555555555555, 0x2AAAAAAAAAAAAAAB),  # alternating bits that all propagate
        (-0x5555555555555555, 0x5555555555555554),
        (2**32 - 1, 2**32 + 1),
        (0, 0),
    ]
    first = torch.tensor([[a for a, _ in pairs]], dtype=torch.int64)
    second = torch.tensor([[b for _, b in pairs]], dtype=torch.int64)
    shared = relu_only((len(pairs),))

    runs = run_parties(specs=(shared.spec, shared.spec), parts=({}, {}), provider_part={}, input_shares=(first, second))

    assert [run.error for run in runs] == [None, None]
    assert torch.equal(ring.reconstruct(runs[0].output, runs[1].output), (first + second).clamp(min=0))
