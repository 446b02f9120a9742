"""Encrypted inference while each worker node runs as two replicas behind its nginx (one upstream of two
servers), sharing PostgreSQL, the object store and the broker (Redis, GRIDNODE_BROKER_URL), each replica with
its own data folder: an exchange that lands on the replica without the session's evaluation reaches it
through the broker. Without the broker the same inference fails (the round messages cannot leave a host).

nginx balances by requests in progress, so while worker 1's evaluation holds the client's request on one
replica, party 0's exchanges go to the other: every exchange crosses replicas. Needs PostgreSQL, nginx,
SeaweedFS and Redis (tests/replicas/conftest.py); skipped without them, as the other replica tests are.
"""

import pytest
import torch
from torch import nn

from gridclient.encrypted import EncryptedInferenceFailed, host_encrypted_model, run_encrypted_inference
from tests.reliability.helpers import wait_for
from tests.replicas.conftest import NEEDS_POSTGRESQL

pytestmark = NEEDS_POSTGRESQL

INFERENCES = 6


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def host(nodes) -> tuple[nn.Sequential, list[str]]:
    worker0, worker1, provider = nodes
    model = mlp()
    workers = [worker0.url, worker1.url]
    host_encrypted_model(
        model, (784,), "spread", workers=workers, crypto_provider=provider.url, allow_remote_inference=True
    )
    return model, workers


def test_an_encrypted_inference_succeeds_with_its_exchanges_spread_over_both_replicas_of_each_worker(
    encrypted_nodes,
):
    worker0, worker1, _provider = encrypted_nodes
    model, workers = host(encrypted_nodes)

    for _ in range(INFERENCES):
        x = torch.rand(1, 784)
        result = run_encrypted_inference("spread", x, workers=workers)
        with torch.no_grad():
            expected = model(x).double()
        assert float((result.output - expected).abs().max()) < 1e-3
        assert torch.equal(result.output.argmax(dim=1), expected.argmax(dim=1))

    # nginx writes a request's access-log line once its answer is sent: the last may still be on its way.
    wait_for(lambda: all(len(worker.served_by("/inference")) >= INFERENCES for worker in (worker0, worker1)))
    # Each worker's inference requests, and worker 1's exchanges, went to both of its replicas...
    for worker in (worker0, worker1):
        assert len(set(worker.served_by("/inference"))) == 2, worker.served_by("/inference")
    exchanges = worker1.served_by("/smpc/exchange")
    assert len(exchanges) == INFERENCES * result.rounds
    assert len(set(exchanges)) == 2
    # ...and each exchange reached an evaluation on the other replica: the one holding the client's request.
    evaluations = worker1.served_by("/inference")
    crossed = sum(
        exchange != evaluation
        for evaluation, rounds in zip(evaluations, _per_inference(exchanges, result.rounds), strict=True)
        for exchange in rounds
    )
    assert crossed > 0


def _per_inference(exchanges: list[str], rounds: int) -> list[list[str]]:
    return [exchanges[start : start + rounds] for start in range(0, len(exchanges), rounds)]


@pytest.mark.parametrize("encrypted_nodes", [False], indirect=True, ids=["without-broker"])
def test_without_the_broker_an_exchange_on_the_other_replica_fails_the_inference(encrypted_nodes):
    """The deliberate break: the same deployment with no GRIDNODE_BROKER_URL. The exchange lands on the
    replica without the evaluation, whose local socket it cannot reach: the client gets an error, never an
    answer."""
    _model, workers = host(encrypted_nodes)

    with pytest.raises(EncryptedInferenceFailed) as failure:
        run_encrypted_inference("spread", torch.rand(1, 784), workers=workers)

    # Worker 1 waited for a first round that reached its other replica (or worker 0 heard that replica's 504).
    assert failure.value.status in (502, 504)
    assert "round 0 of session" in str(failure.value), str(failure.value)
