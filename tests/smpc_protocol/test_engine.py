"""Whole models on shares: answers as close to plaintext as fixed point allows, rounds as counted, and
parties that disagree stop with ProtocolError instead of answering."""

import pytest
import torch
from torch import nn

from smpc_protocol import engine, hosting, ring
from tests.smpc_protocol.harness import evaluate, one_of_two_runs, run_parties, truncation_failure_bound


def mlp() -> nn.Sequential:
    torch.manual_seed(10)
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn() -> nn.Sequential:
    torch.manual_seed(11)
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 6, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(3, stride=2),
        nn.Flatten(),
        nn.Linear(54, 10),
    )


def assert_matches_plaintext(model: nn.Sequential, inputs: torch.Tensor, tolerance: float) -> None:
    expected = model(inputs).detach().to(torch.float64)
    top_two = expected.topk(2, dim=1).values
    # With these fixed weights and inputs no two leading logits are close, so within `tolerance` the argmax
    # cannot change: a different argmax is an error larger than the tolerance, never bad luck.
    assert float((top_two[:, 0] - top_two[:, 1]).min()) > 2 * tolerance
    assert truncation_failure_bound(model, inputs) < 3e-5
    shared = hosting.split_model(model, inputs.shape[1:])

    def close() -> bool:
        outputs, _ = evaluate(shared, ring.encode(inputs))
        decoded = ring.decode(outputs)
        return float((decoded - expected).abs().max()) < tolerance and torch.equal(
            decoded.argmax(dim=1), expected.argmax(dim=1)
        )

    assert one_of_two_runs(close)


def test_an_mlp_matches_plaintext_within_1e_3():
    inputs = torch.rand(16, 784, generator=torch.Generator().manual_seed(12))

    assert_matches_plaintext(mlp(), inputs, 1e-3)


def test_a_cnn_matches_plaintext_within_1e_2():
    inputs = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(13))

    assert_matches_plaintext(cnn(), inputs, 1e-2)


@pytest.mark.parametrize(("model", "input_shape", "rounds"), [(mlp, (784,), 3 + 2 * 7), (cnn, (1, 28, 28), 3 + 2 * 7)])
def test_it_uses_the_rounds_it_counts(model, input_shape, rounds):
    shared = hosting.split_model(model(), input_shape)

    _, runs = evaluate(shared, ring.encode(torch.rand(2, *input_shape)))

    assert engine.count_rounds(shared.spec) == rounds
    assert [run.rounds for run in runs] == [rounds, rounds]
    assert [len(run.received) for run in runs] == [rounds, rounds]


def test_it_checks_the_agreement_in_the_first_round_only():
    _, runs = evaluate(hosting.split_model(mlp(), (784,)), ring.encode(torch.rand(2, 784)))

    for run in runs:
        assert engine.AGREEMENT in run.received[0]
        assert not any(engine.AGREEMENT in message for message in run.received[1:])


@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (2, 5)])
def test_average_pooling_is_off_by_no_more_than_its_fixed_point_scale(kernel):
    pool = nn.AvgPool2d(kernel, stride=1)
    model = nn.Sequential(pool)
    inputs = torch.randint(-1000, 1001, (2, 1, 6, 6), generator=torch.Generator().manual_seed(15)).double()
    inputs += torch.rand(inputs.shape, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    inputs = ring.decode(ring.encode(inputs))
    expected = pool(inputs)
    shared = hosting.split_model(model, (1, 6, 6))
    window = kernel[0] * kernel[1]
    # 1 / window in fixed point is off by at most half a unit, 2^-17, relative to 2^-16 / window; the truncation
    # adds one unit.
    scale_error = window * 2.0**-17
    tolerance = expected.abs() * scale_error + 2.0**-16
    assert truncation_failure_bound(model, inputs) < 3e-5

    def within() -> bool:
        outputs, _ = evaluate(shared, ring.encode(inputs))
        return bool(((ring.decode(outputs) - expected).abs() <= tolerance).all())

    assert one_of_two_runs(within)


def test_it_counts_no_rounds_for_public_layers():
    shared = hosting.split_model(nn.Sequential(nn.AvgPool2d(2), nn.Flatten()), (1, 4, 4))

    outputs, runs = evaluate(shared, ring.encode(torch.ones(1, 1, 4, 4)))

    assert engine.count_rounds(shared.spec) == 0
    assert [run.received for run in runs] == [[], []]
    assert ring.decode(outputs).tolist() == [[1.0] * 4]


def run_mlp(shares_given=lambda first, second: (first, second), **options):
    """Both parties' runs of the MLP on 4 inputs, each party given what `shares_given` makes of its share."""
    shared = hosting.split_model(mlp(), (784,))
    first, second = ring.share(ring.encode(torch.rand(4, 784)))
    return run_parties(
        specs=(shared.spec, shared.spec),
        parts=shared.worker_parts,
        provider_part=shared.provider_part,
        input_shares=shares_given(first, second),
        **options,
    )


def test_it_stops_both_parties_when_they_disagree_on_the_session():
    runs = run_mlp(agreements=("model-a/batch-4/seed-1", "model-b/batch-4/seed-1"))

    for run in runs:
        assert isinstance(run.error, engine.ProtocolError)
        assert "disagree" in str(run.error)
        assert run.output is None
        assert run.rounds == 1


def test_it_stops_both_parties_when_their_batches_differ():
    runs = run_mlp(shares_given=lambda first, second: (first, second[:3]))

    for run in runs:
        assert isinstance(run.error, engine.ProtocolError)
        assert run.output is None
        assert run.rounds == 1


def test_it_stops_both_parties_when_their_models_differ():
    torch.manual_seed(14)
    first = hosting.split_model(nn.Sequential(nn.Linear(6, 6), nn.ReLU()), (6,))
    second = hosting.split_model(nn.Sequential(nn.ReLU(), nn.Linear(6, 6)), (6,))
    shares = ring.share(ring.encode(torch.rand(2, 6)))

    runs = run_parties(
        specs=(first.spec, second.spec),
        parts=(first.worker_parts[0], second.worker_parts[1]),
        provider_part={**first.provider_part, **second.provider_part},
        input_shares=shares,
    )

    for run in runs:
        assert isinstance(run.error, engine.ProtocolError)
        assert run.output is None


def test_it_refuses_inputs_for_another_batch_than_its_randomness():
    # Party 1 holds randomness for 4 inputs but shares of 1: broadcasting must not turn that into an answer.
    runs = run_mlp(shares_given=lambda first, second: (first, second[:1]), bundle_batches=(4, 4), exchange_timeout=0.2)

    assert isinstance(runs[1].error, engine.ProtocolError)
    assert runs[0].output is None
    assert runs[1].output is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda shares: shares[:, :700],
        lambda shares: shares.to(torch.float64),
        lambda shares: shares.reshape(4, 28, 28),
        lambda shares: shares[0],
    ],
    ids=["too few features", "float64", "an image", "no batch"],
)
def test_it_refuses_inputs_that_do_not_fit_the_model(mangle):
    runs = run_mlp(
        shares_given=lambda first, second: (first, mangle(second)), bundle_batches=(4, 4), exchange_timeout=0.2
    )

    assert isinstance(runs[1].error, engine.ProtocolError)
    assert runs[1].rounds == 0
    assert runs[0].output is None
