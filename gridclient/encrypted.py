"""Encrypted models from the client's side: host a model as secret shares, and run it on secret inputs.

    nodes = host_encrypted_model(model, (784,), "mnist", workers=[alice, bob], crypto_provider=carol,
                                 allow_remote_inference=True)
    result = run_encrypted_inference("mnist", images, workers=nodes.workers)
    result.output  # the logits; apply softmax yourself

Neither worker ever holds the weights or the input: each gets one share, uniformly random on its own.
Only this process, adding the two output shares, sees the answer (README: "Encrypted inference").
"""

import contextlib
import queue
import secrets
import threading
from collections.abc import Iterable
from typing import NamedTuple

import torch

from gridclient.client import DEFAULT_TIMEOUT, EncryptedModelNodes, GridNodeClient
from gridclient.errors import GridNodeError, ServerError
from smpc_protocol import hosting, ring, wire

# Longer than a node's own GRIDNODE_SMPC_TIMEOUT (10 s by default), so that a node's precise error
# about its peer arrives before this client gives up on its own.
INFERENCE_TIMEOUT = 30.0


class EncryptedInferenceFailed(GridNodeError):
    """A worker answered an error (or nothing): the session is abandoned and no output is made up."""


class EncryptedResult(NamedTuple):
    """The reconstructed output and what it took: exchange rounds and bytes each worker moved."""

    output: torch.Tensor
    rounds: int
    bytes_per_worker: tuple[int, int]


def host_encrypted_model(
    model: torch.nn.Module,
    input_shape: Iterable[int],
    model_id: str,
    *,
    workers: list[str],
    crypto_provider: str,
    token: str | None = None,
    allow_remote_inference: bool = False,
    allow_download: bool = False,
    description: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> EncryptedModelNodes:
    """Split `model` (an nn.Sequential of Linear, Conv2d, ReLU, AvgPool2d, Flatten) and host it on the nodes.

    Every node is given the registration; each worker one share, the crypto provider the weight masks.
    `input_shape` is one input's shape without the batch. An unsupported model raises SpecError (a
    ValueError) before anything is sent; if a node refuses, the registrations already made are deleted.
    The nodes must trust each other (`manage.py smpc_trust` on each) before the model can run.

    `allow_download` must stay false: any two of the three parts rebuild the weights, so nodes never hand
    a part out again (keep the model itself if you need it back).
    """
    if len(workers) != 2:
        raise ValueError("encrypted inference runs on exactly two workers")
    if allow_download:
        raise ValueError("an encrypted model's parts are never downloadable: any two of them rebuild its weights")
    shared = hosting.split_model(model, tuple(input_shape))
    spec = shared.spec.to_json()
    nodes = [GridNodeClient(url, token=token, timeout=timeout, progress=False) for url in [*workers, crypto_provider]]
    registered: list[GridNodeClient] = []
    try:
        for node in nodes:
            node.register_encrypted_model(model_id, workers, crypto_provider, description=description)
            registered.append(node)
        flags = {"allow_remote_inference": allow_remote_inference}
        for party in (0, 1):
            nodes[party].upload_model_share(
                model_id, shared.worker_parts[party], spec=spec, role="worker", party=party, **flags
            )
        nodes[2].upload_model_share(model_id, shared.provider_part, spec=spec, role="crypto_provider", **flags)
    except BaseException:
        for node in registered:
            with contextlib.suppress(GridNodeError):
                node.delete_encrypted_model(model_id)
        raise
    return EncryptedModelNodes(workers=[node.url for node in nodes[:2]], crypto_provider=[nodes[2].url])


def run_encrypted_inference(
    model_id: str,
    inputs: torch.Tensor,
    *,
    workers: list[str] | None = None,
    via: str | None = None,
    token: str | None = None,
    timeout: float = INFERENCE_TIMEOUT,
) -> EncryptedResult:
    """Run an encrypted model on `inputs` (a batch) without either worker seeing them; answer the output.

    The workers come from `workers`, or from asking the node at `via` (`/search-encrypted-models`).
    A worker's error, or no answer within `timeout` seconds, raises EncryptedInferenceFailed naming the
    worker: an output is returned only when both shares arrived for this session. Inputs that are not finite
    or not smaller than `ring.MAX_ABS_VALUE` in magnitude raise `ring.OutOfRange` (a ValueError) before
    anything is sent.
    """
    ring.check_range(inputs)
    if workers is None:
        workers = GridNodeClient(via, token=token, timeout=timeout).search_encrypted_models(model_id).workers
    if len(workers) != 2:
        raise ValueError(f"'{model_id}' has {len(workers)} workers: encrypted inference runs on two")
    session_id = secrets.token_hex(16)
    input_shares = ring.share(ring.encode(inputs))
    answers: queue.Queue = queue.Queue()

    def ask(party: int) -> None:
        node = GridNodeClient(workers[party], token=token, timeout=timeout, progress=False)
        message = wire.pack({"x": input_shares[party]}, {"session": session_id, "party": party})
        try:
            answers.put((party, node.evaluate_share(model_id, message), None))
        except BaseException as error:  # handed to the caller's thread
            answers.put((party, None, error))

    for party in (0, 1):
        threading.Thread(target=ask, args=(party,), daemon=True, name=f"smpc-{session_id[:8]}-{party}").start()
    replies: dict[int, bytes] = {}
    while len(replies) < 2:
        try:
            party, reply, error = answers.get(timeout=timeout)
        except queue.Empty:
            raise EncryptedInferenceFailed(
                None, f"The workers of '{model_id}' did not answer within {timeout:g} s."
            ) from None
        if error is not None:
            status, reason = (error.status, error.message) if isinstance(error, GridNodeError) else (None, str(error))
            raise EncryptedInferenceFailed(status, f"Worker {workers[party]} failed: {reason}") from error
        replies[party] = reply
    return _reconstruct(replies, session_id=session_id, workers=workers)


def _reconstruct(replies: dict[int, bytes], *, session_id: str, workers: list[str]) -> EncryptedResult:
    """The output from both workers' answers, after checking they belong to this session and agree."""
    shares, traffic = [], []
    rounds: set[int] = set()
    for party in (0, 1):
        try:
            tensors, meta = wire.unpack(replies[party])
        except wire.WireError as error:
            raise ServerError(200, f"Worker {workers[party]} answered a malformed message: {error}") from None
        if meta.get("session") != session_id or meta.get("party") != party or set(tensors) != {"y"}:
            raise ServerError(200, f"Worker {workers[party]} answered for another session or party.")
        if not isinstance(meta.get("rounds"), int):
            raise ServerError(200, f"Worker {workers[party]} answered a malformed message: no round count.")
        shares.append(tensors["y"])
        rounds.add(meta["rounds"])
        # The worker's counts leave out its answer to us.
        traffic.append(int(meta.get("bytes_sent", 0)) + int(meta.get("bytes_received", 0)) + len(replies[party]))
    if shares[0].shape != shares[1].shape or len(rounds) != 1:
        raise ServerError(200, "The workers' answers do not match: the session is abandoned.")
    output = ring.decode(ring.reconstruct(shares[0], shares[1]))
    return EncryptedResult(output=output, rounds=rounds.pop(), bytes_per_worker=(traffic[0], traffic[1]))
