"""What each party sees: everything a worker stores or receives is uniform on its own, even for a model
whose weights are all zero and inputs that are all zero, and the crypto provider gets no input, weight
or activation (README "Encrypted inference", semi-honest model).

Uniform means here: every bit position is set about half the time (`assert_uniform_bits`). A weight, an
input or an activation in clear would show as bits that are always 0 (zeros, small numbers) or always
equal (constants).
"""

import inspect

import pytest
import torch
from torch import nn

from smpc_protocol import engine, hosting, randomness, ring
from tests.smpc_protocol.harness import assert_uniform_bits, evaluate, one_of_two_runs, truncation_failure_bound

BATCH = 16
# The opened sign of each ReLU, masked by a random bit: one bit per value, tested as fair bits.
OPENED_BITS = "c"


def mlp(weight: float, bias: float) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    with torch.no_grad():
        for layer in model[::2]:
            layer.weight.fill_(weight)
            layer.bias.fill_(bias)
    return model


MODELS = {"all-zero": (0.0, 0.0), "constant": (0.125, 0.25)}


@pytest.fixture(scope="module", params=MODELS.values(), ids=MODELS.keys())
def evaluated(request):
    """A hosted MLP with constant weights, evaluated once on all-zero inputs: (model, shared model, output, runs)."""
    model = mlp(*request.param)
    shared = hosting.split_model(model, (784,))
    outputs, runs = evaluate(shared, torch.zeros(BATCH, 784, dtype=torch.int64))
    return model, shared, outputs, runs


def test_every_message_a_worker_receives_is_uniform(evaluated):
    *_, runs = evaluated

    for party, run in enumerate(runs):
        assert len(run.received) == engine.count_rounds(evaluated[1].spec)
        for round_index, message in enumerate(run.received):
            for name, tensor in message.items():
                what = f"party {party}, round {round_index}, '{name}'"
                if name == engine.AGREEMENT:
                    continue  # a digest of public session facts, the same on both sides by design
                if name == OPENED_BITS:
                    assert_uniform_bits(tensor, what, bits=1)
                else:
                    assert_uniform_bits(tensor, what)


def test_it_opens_only_masked_values_and_masked_bits(evaluated):
    *_, runs = evaluated
    names = {name for run in runs for message in run.received for name in message}

    ands = {f"{word}.{side}" for word in ("g", "ga", "gb", "pa", "pb", "p") for side in "de"}
    assert names == {engine.AGREEMENT, "x", *ands, OPENED_BITS}


def test_every_bundle_tensor_a_worker_receives_is_uniform(evaluated):
    *_, runs = evaluated

    for party, run in enumerate(runs):
        for name, tensor in run.bundle.items():
            if name.endswith(".r_bit"):
                assert_uniform_bits(tensor, f"party {party}'s bundle '{name}'", bits=1)
            else:
                assert_uniform_bits(tensor, f"party {party}'s bundle '{name}'")


def test_each_workers_input_share_of_zeros_is_uniform():
    for party, share in enumerate(ring.share(torch.zeros(BATCH, 784, dtype=torch.int64))):
        assert_uniform_bits(share, f"party {party}'s input share")


def test_the_answer_is_exact_when_inputs_and_weights_are_all_zero():
    outputs, _ = evaluate(hosting.split_model(mlp(0.0, 0.0), (784,)), torch.zeros(BATCH, 784, dtype=torch.int64))

    # Every secret is 0, and shares of 0 never wrap when truncated: the answer is exactly 0 on every run.
    assert torch.equal(outputs, torch.zeros(BATCH, 10, dtype=torch.int64))


def test_the_answer_is_exact_for_constant_weights_on_zero_inputs():
    model = mlp(0.125, 0.25)
    inputs = torch.zeros(BATCH, 784)
    shared = hosting.split_model(model, (784,))
    # 0.25, then 128 * 0.25 * 0.125 + 0.25 = 4.25, then 128 * 4.25 * 0.125 + 0.25: exact in fixed point.
    expected = torch.full((BATCH, 10), 68.25, dtype=torch.float64)
    assert torch.equal(model(inputs).detach().double(), expected)
    assert truncation_failure_bound(model, inputs) < 3e-5

    assert one_of_two_runs(lambda: torch.equal(ring.decode(evaluate(shared, ring.encode(inputs))[0]), expected))


def stored_samples(model: nn.Sequential, party: int) -> dict[str, torch.Tensor]:
    """Each tensor `party` stores for `model`; one with fewer than 200 values (the last layer's biases) is
    stacked from that many independent splits of its layer, to make a sample a frequency test can judge."""
    shared = hosting.split_model(model, (784,))
    samples = {}
    for name, tensor in shared.worker_parts[party].items():
        index, kind = name.split(".")
        draws = -(-200 // tensor.numel())
        if draws > 1:
            layer = nn.Sequential(model[int(index)])
            input_shape = shared.spec.input_shape_of(int(index))
            tensor = torch.stack(
                [hosting.split_model(layer, input_shape).worker_parts[party][f"0.{kind}"] for _ in range(draws)]
            )
        samples[name] = tensor
    return samples


@pytest.mark.parametrize(("weight", "bias"), MODELS.values(), ids=MODELS.keys())
def test_what_each_worker_stores_is_uniform(weight, bias):
    model = mlp(weight, bias)

    for party in (0, 1):
        samples = stored_samples(model, party)
        assert len(samples) == 9
        for name, stored in samples.items():
            assert_uniform_bits(stored, f"party {party}'s stored '{name}'")


@pytest.mark.parametrize(("weight", "bias"), MODELS.values(), ids=MODELS.keys())
def test_both_workers_store_the_same_masked_weights_and_different_mask_shares(weight, bias):
    model = mlp(weight, bias)
    shared = hosting.split_model(model, (784,))
    zero, one = shared.worker_parts

    for index in (0, 2, 4):
        masked = hosting.tensor_name(index, hosting.MASKED_WEIGHT)
        mask = hosting.tensor_name(index, hosting.WEIGHT_MASK)
        bias_name = hosting.tensor_name(index, hosting.BIAS)
        assert torch.equal(zero[masked], one[masked])
        assert not torch.equal(zero[mask], one[mask])
        assert torch.equal(zero[mask] + one[mask], shared.provider_part[mask])
        assert torch.equal(zero[masked] + shared.provider_part[mask], ring.encode(model[index].weight.detach().T))
        assert torch.equal(zero[bias_name] + one[bias_name], ring.encode(model[index].bias.detach(), 32))


def test_the_provider_is_given_nothing_but_public_facts_and_its_part():
    parameters = inspect.signature(randomness.party_bundle).parameters

    assert set(parameters) == {"spec", "provider_part", "batch", "seed", "party"}
    assert all(parameter.kind is inspect.Parameter.KEYWORD_ONLY for parameter in parameters.values())


@pytest.mark.parametrize(("weight", "bias"), MODELS.values(), ids=MODELS.keys())
def test_the_provider_part_is_only_the_weight_masks_and_uniform(weight, bias):
    shared = hosting.split_model(mlp(weight, bias), (784,))

    assert {name: tuple(tensor.shape) for name, tensor in shared.provider_part.items()} == (
        hosting.expected_part_shapes(shared.spec, "crypto_provider")
    )
    for name, mask in shared.provider_part.items():
        assert name.endswith(hosting.WEIGHT_MASK)
        assert_uniform_bits(mask, f"the provider's '{name}'")


def test_the_spec_the_provider_gets_is_the_same_whatever_the_weights():
    specs = [hosting.split_model(mlp(*values), (784,)).spec for values in [*MODELS.values(), (-3.0, 7.0)]]

    assert all(spec == specs[0] for spec in specs)
    assert len({spec.digest() for spec in specs}) == 1
