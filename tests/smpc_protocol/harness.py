"""Two parties of `engine.Evaluation` in two threads, over an in-memory channel that records every message.

Messages go through `wire.pack`/`wire.unpack`, as they would between nodes, and each party's channel keeps
what it received, so tests can look at exactly what a worker sees. Bundles are dealt the way the crypto
provider deals them: `randomness.party_bundle` with a fresh 32-byte seed from os.urandom per session.
"""

import copy
import math
import os
import queue
import threading
from dataclasses import dataclass, field

import torch
from torch import nn

from smpc_protocol import engine, hosting, randomness, ring, wire
from smpc_protocol.spec import ModelSpec

# Long enough for any evaluation in these tests on a busy 2-core machine; short enough that a party left
# waiting by a peer that stopped fails the test instead of hanging it.
EXCHANGE_TIMEOUT_SECONDS = 10.0
THREAD_TIMEOUT_SECONDS = 60.0


class PeerSilent(Exception):
    """The peer sent nothing for a round within the timeout (it stopped, or the protocol is out of step)."""


class RecordingChannel:
    """One party's end of an in-memory channel pair; `received` holds every message the peer sent it."""

    def __init__(self, outbox: queue.Queue, inbox: queue.Queue, timeout: float) -> None:
        self._outbox, self._inbox, self._timeout = outbox, inbox, timeout
        self.received: list[dict[str, torch.Tensor]] = []

    def exchange(self, payload: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._outbox.put(wire.pack(payload))
        try:
            raw = self._inbox.get(timeout=self._timeout)
        except queue.Empty:
            raise PeerSilent(f"no message from the peer within {self._timeout} s") from None
        tensors, _ = wire.unpack(raw)
        self.received.append(tensors)
        return tensors


def channel_pair(timeout: float = EXCHANGE_TIMEOUT_SECONDS) -> tuple[RecordingChannel, RecordingChannel]:
    """Two connected channel ends, for party 0 and party 1."""
    zero_to_one, one_to_zero = queue.Queue(), queue.Queue()
    return RecordingChannel(zero_to_one, one_to_zero, timeout), RecordingChannel(one_to_zero, zero_to_one, timeout)


@dataclass
class PartyRun:
    """What one party ended with: its output share or the exception it raised, and what it saw."""

    output: torch.Tensor | None = None
    error: BaseException | None = None
    received: list[dict[str, torch.Tensor]] = field(default_factory=list)
    bundle: dict[str, torch.Tensor] = field(default_factory=dict)
    rounds: int = 0


def run_parties(
    *,
    specs: tuple[ModelSpec, ModelSpec],
    parts: tuple[dict, dict],
    provider_part: dict[str, torch.Tensor],
    input_shares: tuple[torch.Tensor, torch.Tensor],
    agreements: tuple[str, str] = ("session", "session"),
    bundle_batches: tuple[int, int] | None = None,
    exchange_timeout: float = EXCHANGE_TIMEOUT_SECONDS,
) -> tuple[PartyRun, PartyRun]:
    """Both parties' evaluations, each in its own thread; exceptions are caught and returned, not raised."""
    seed = os.urandom(32)
    batches = bundle_batches or (input_shares[0].shape[0], input_shares[1].shape[0])
    channels = channel_pair(exchange_timeout)
    runs = (PartyRun(), PartyRun())

    def play(party: int) -> None:
        run = runs[party]
        run.received = channels[party].received
        try:
            run.bundle = randomness.party_bundle(
                spec=specs[party], provider_part=provider_part, batch=batches[party], seed=seed, party=party
            )
            evaluation = engine.Evaluation(
                spec=specs[party],
                part=parts[party],
                party=party,
                bundle=run.bundle,
                channel=channels[party],
                agreement=agreements[party],
            )
            try:
                run.output = evaluation.run(input_shares[party])
            finally:
                run.rounds = evaluation.rounds
        except BaseException as error:  # handed to the test, which decides what was expected
            run.error = error

    threads = [threading.Thread(target=play, args=(party,), daemon=True) for party in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_SECONDS)
        assert not thread.is_alive(), "a party is still running: the evaluation hangs"
    return runs


def evaluate(
    shared: hosting.SharedModel, secret_inputs: torch.Tensor, **options
) -> tuple[torch.Tensor, tuple[PartyRun, PartyRun]]:
    """The reconstructed output ring values of a hosted model on ring-valued inputs; both parties must succeed."""
    runs = run_parties(
        specs=(shared.spec, shared.spec),
        parts=shared.worker_parts,
        provider_part=shared.provider_part,
        input_shares=ring.share(secret_inputs),
        **options,
    )
    for run in runs:
        if run.error is not None:
            raise run.error
    return ring.reconstruct(runs[0].output, runs[1].output), runs


def relu_only(input_shape: tuple[int, ...]) -> hosting.SharedModel:
    """A hosted model that is one ReLU: nothing stored, no provider part."""
    return hosting.split_model(nn.Sequential(nn.ReLU()), input_shape)


def truncation_failure_bound(module: nn.Sequential, inputs: torch.Tensor) -> float:
    """An upper bound on the chance that one evaluation of `module` on `inputs` has a truncation that wraps.

    `ring.truncate` of a secret v (a ring element) is wrong when the two shares wrap around the ring, which
    happens with probability |v| / 2^64. The engine truncates every Linear, Conv2d and AvgPool2d output,
    held with 32 fractional bits; |v| + 1 (in plaintext units, times 2^32) covers the fixed-point error.
    """
    total = 0.0
    x = inputs.to(torch.float64)
    with torch.no_grad():
        for child in copy.deepcopy(module).to(torch.float64):
            x = child(x)
            if isinstance(child, nn.Linear | nn.Conv2d | nn.AvgPool2d):
                total += float((x.abs() + 1).sum()) * 2.0**32 / 2.0**64
    return total


def one_of_two_runs(attempt) -> bool:
    """Whether `attempt()` (a fresh evaluation, True when its answer is right) succeeds once in two tries.

    An evaluation with truncations is wrong with a small probability p (`truncation_failure_bound`) even
    when the protocol is right, so a single run cannot meet a 1e-9 false-failure budget; two independent
    runs (fresh shares and a fresh seed each) both fail with probability p^2. Callers assert p < 3e-5.
    """
    return attempt() or attempt()


def assert_uniform_bits(values: torch.Tensor, what: str, *, bits: int = 64) -> None:
    """Each bit position of `values` (int64 ring elements, or 0/1 values with bits=1) is set about half the time.

    Hoeffding: the frequency of a fair bit over n samples is off by t or more with probability at most
    2 exp(-2 n t^2). t is chosen so that this is 1e-13 / bits per position, 1e-13 per call; the directory
    makes fewer than 2,000 calls, so uniform values fail one with probability below 1e-9 per test run.
    """
    flat = values.reshape(-1)
    if bits == 1:
        assert bool(((flat == 0) | (flat == 1)).all()), f"{what}: not all values are 0 or 1"
    count = flat.numel()
    tolerance = math.sqrt(math.log(2 * bits / 1e-13) / (2 * count))
    # Smaller samples would let a constant bit (frequency 0 or 1) pass: refuse them rather than test nothing.
    assert tolerance < 0.4, f"{what}: {count} values are too few for a frequency test"
    frequencies = torch.tensor([float(((flat >> position) & 1).sum()) / count for position in range(bits)])
    worst = int((frequencies - 0.5).abs().argmax())
    assert abs(float(frequencies[worst]) - 0.5) < tolerance, (
        f"{what}: bit {worst} is set in {float(frequencies[worst]):.3f} of {count} values (tolerance {tolerance:.3f})"
    )
