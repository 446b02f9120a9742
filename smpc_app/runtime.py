"""Encrypted inference at run time: a worker evaluating its share, and the crypto provider dealing randomness.

A client sends each worker one share of its input (`worker_evaluate`). Each worker asks the model's
crypto provider for its half of the session's correlated randomness (`provider_deal`, signed), then the
two workers run the rounds of `smpc_protocol.engine` against each other (`smpc_app.channels`) and each
answers its share of the output. Only the client, adding the two, sees the result. All of it, rounds
included, ends within GRIDNODE_INFERENCE_TIMEOUT of the request's arrival (`channels.Deadline`), or 504.

The provider derives a session's randomness from a seed it never sends: an HMAC, under a key made from
this node's SECRET_KEY, of a nonce it draws when the session is first asked for. A session row records
the nonce and which party was served, so each party's half is dealt once and a session id reused later
gets fresh randomness (never the same triples twice).
"""

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import prefetch_related_objects
from django.utils import timezone

from gridnode.errors import BadGateway, BadRequest, Conflict, ServiceUnavailable
from smpc_app.channels import Deadline, PeerChannel, SessionMailbox, Traffic, node_connection, post_signed
from smpc_app.models import RandomnessSession
from smpc_app.shares import share_load
from smpc_protocol import engine, randomness, wire

SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
SESSION_RULE = "32 lowercase hexadecimal characters (128 random bits, fresh for every inference)"
# Provider rows older than this are deleted; far longer than any session can run.
SESSION_RECORD_DAYS = 1
# How often (one request in this many) the provider deletes those old rows.
PRUNE_ONE_IN = 100
_SEED_PURPOSE = b"gridnode smpc provider seed v1\x00"


def _unpack(body: bytes, what: str):
    try:
        return wire.unpack(body)
    except wire.WireError as error:
        raise BadRequest(f"The {what} is not an SMPC message: {error}.") from None


def _session_id(meta: dict) -> str:
    session_id = meta.get("session")
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise BadRequest(f"'session' must be {SESSION_RULE}.")
    return session_id


def _batch(value) -> int:
    limit = settings.GRIDNODE_MAX_INFERENCE_BATCH
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise BadRequest(f"'batch' must be a whole number from 1 to {limit}.")
    return value


_running = 0
_running_lock = threading.Lock()


@contextlib.contextmanager
def _session_slot():
    """A place among this process's GRIDNODE_SMPC_MAX_SESSIONS evaluations, or a 503 when all are taken."""
    global _running
    limit = settings.GRIDNODE_SMPC_MAX_SESSIONS
    with _running_lock:
        if limit and _running >= limit:
            raise ServiceUnavailable(
                "This worker is running as many encrypted inferences as it can at once: try again shortly."
            )
        _running += 1
    try:
        yield
    finally:
        with _running_lock:
            _running -= 1


def worker_evaluate(*, model_id: str, body: bytes) -> bytes:
    """This worker's share of the model's output for the client's share of its input (a packed message)."""
    deadline = Deadline()
    with _session_slot():
        return _evaluate(model_id=model_id, body=body, deadline=deadline)


def _evaluate(*, model_id: str, body: bytes, deadline: Deadline) -> bytes:
    """`worker_evaluate` within its slot: party i holds the share uploaded for workers[i]; party 0 drives."""
    tensors, meta = _unpack(body, "request body")
    session_id = _session_id(meta)
    if set(tensors) != {"x"}:
        raise BadRequest("The message must hold exactly one tensor, 'x': this worker's share of the input.")
    inputs = tensors["x"]
    share, spec, part = share_load(model_id=model_id, role="worker")
    if "party" in meta and meta["party"] != share.party:
        raise Conflict(f"This node holds party {share.party}'s share of '{model_id}', not party {meta['party']}'s.")
    if inputs.dim() != len(spec.input_shape) + 1 or tuple(inputs.shape[1:]) != spec.input_shape:
        raise BadRequest(f"'x' must have shape [batch, {', '.join(map(str, spec.input_shape))}].")
    batch = _batch(inputs.shape[0])
    # Both roles' addresses in one query (each property alone would run its own).
    prefetch_related_objects([share.registration], "assignments__node")
    workers = share.registration.worker_urls
    if len(workers) != 2:
        raise Conflict(f"'{model_id}' is registered with {len(workers)} workers: encrypted inference runs on two.")
    provider_url = share.registration.crypto_provider_urls[0]
    traffic = Traffic()
    traffic.received += len(body)
    # Party 1 listens before anything else, so party 0's first message finds it as early as possible.
    channel = SessionMailbox(session_id=session_id, traffic=traffic, deadline=deadline) if share.party == 1 else None
    try:
        bundle, bundle_id = _fetch_randomness(
            provider_url=provider_url,
            model_id=model_id,
            session_id=session_id,
            party=share.party,
            batch=batch,
            spec=spec,
            spec_digest=share.spec_digest,
            traffic=traffic,
            deadline=deadline,
        )
        if channel is None:
            channel = PeerChannel(
                peer_url=workers[1], model_id=model_id, session_id=session_id, traffic=traffic, deadline=deadline
            )
        evaluation = engine.Evaluation(
            spec=spec,
            part=part,
            party=share.party,
            bundle=bundle,
            channel=channel,
            agreement=f"{model_id}|{share.spec_digest}|{batch}|{bundle_id}",
        )
        try:
            output = evaluation.run(inputs)
        except engine.ProtocolError as error:
            raise BadGateway(f"Session {session_id} was abandoned: {error}.") from None
    finally:
        if channel is not None:
            channel.close()
    # The counts leave out this answer, whose size its receiver knows.
    meta = {"session": session_id, "party": share.party, "rounds": evaluation.rounds}
    return wire.pack({"y": output}, {**meta, "bytes_sent": traffic.sent, "bytes_received": traffic.received})


def _fetch_randomness(*, provider_url, model_id, session_id, party, batch, spec, spec_digest, traffic, deadline):
    """This worker's half of the session's randomness from the crypto provider, checked against the spec."""
    timeout = settings.GRIDNODE_SMPC_TIMEOUT
    connection, prefix = node_connection(provider_url, timeout)
    body = wire.pack({}, {"session": session_id, "party": party, "batch": batch, "spec_digest": spec_digest})
    who = f"The crypto provider at {provider_url}"
    try:
        reply = post_signed(
            connection,
            f"{prefix}/encrypted-models/{model_id}/randomness",
            body,
            who=who,
            what=f"the randomness of session {session_id}",
            timeout=timeout,
            deadline=deadline,
        )
    finally:
        connection.close()
    traffic.sent += len(body)
    traffic.received += len(reply)
    try:
        bundle, meta = wire.unpack(reply)
    except wire.WireError as error:
        raise BadGateway(f"{who} sent malformed randomness: {error}.") from None
    expected = randomness.bundle_shapes(spec, batch)
    if {name: tuple(tensor.shape) for name, tensor in bundle.items()} != expected:
        raise BadGateway(f"{who} sent randomness for another model or batch.")
    bundle_id = meta.get("bundle_id")
    if not isinstance(bundle_id, str):
        raise BadGateway(f"{who} sent randomness without its id.")
    return bundle, bundle_id


def provider_deal(*, model_id: str, body: bytes) -> bytes:
    """One worker's half of a session's correlated randomness (a packed message), dealt once per party."""
    _tensors, meta = _unpack(body, "request body")
    session_id = _session_id(meta)
    party = meta.get("party")
    if party not in (0, 1) or isinstance(party, bool):
        raise BadRequest("'party' must be 0 or 1.")
    batch = _batch(meta.get("batch"))
    share, spec, provider_part = share_load(model_id=model_id, role="crypto_provider")
    if meta.get("spec_digest") != share.spec_digest:
        raise Conflict(f"The worker's model '{model_id}' is not the one this crypto provider holds a mask for.")
    nonce = _session_claim(session_id=session_id, model_id=model_id, batch=batch, party=party)
    key = hashlib.sha256(_SEED_PURPOSE + settings.SECRET_KEY.encode()).digest()
    seed = hmac.new(key, nonce + session_id.encode(), hashlib.sha256).digest()
    bundle = randomness.party_bundle(spec=spec, provider_part=provider_part, batch=batch, seed=seed, party=party)
    # Lets the two workers check they hold halves of the same randomness without revealing the nonce.
    bundle_id = hashlib.sha256(b"bundle id\x00" + nonce).hexdigest()[:32]
    return wire.pack(bundle, {"bundle_id": bundle_id})


def _session_claim(*, session_id: str, model_id: str, batch: int, party: int) -> bytes:
    """The session's nonce, after marking `party` served; a 409 when it was served before.

    One statement inserts the session or marks the party on the existing row, and only when that party
    was not served yet, so two requests for one party can never both get it. On PostgreSQL it commits
    without waiting for the disk: a crash may forget a session, and then a later request draws a new
    nonce, whose randomness the other party's does not match. The workers check that they hold the same
    randomness before their first exchange (`engine.Evaluation`), so such a session fails, never misleads.
    """
    if secrets.randbelow(PRUNE_ONE_IN) == 0:
        cutoff = timezone.now() - timedelta(days=SESSION_RECORD_DAYS)
        RandomnessSession.objects.filter(created_at__lt=cutoff).delete()
    served = f"served_party_{party}"
    table = RandomnessSession._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        cursor.execute(
            f"INSERT INTO {table} (session_id, model_id, batch, nonce, served_party_0, served_party_1, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) "
            f"ON CONFLICT (session_id) DO UPDATE SET {served} = %s WHERE {table}.{served} = %s "
            "RETURNING model_id, batch, nonce",
            [session_id, model_id, batch, os.urandom(16), party == 0, party == 1, timezone.now(), True, False],
        )
        claimed = cursor.fetchone()
    if claimed is None:
        raise Conflict(f"Party {party}'s randomness for session {session_id} was already dealt: use a new session id.")
    claimed_model_id, claimed_batch, nonce = claimed
    if claimed_model_id != model_id or claimed_batch != batch:
        raise Conflict(f"Session {session_id} was started for another model or batch: use a fresh session id.")
    return bytes(nonce)


def message_session_id(body: bytes) -> str:
    """The session a packed message belongs to, from its header alone; a 400 when it names none.

    The tensors are read once, by the evaluation the message is for.
    """
    try:
        meta = wire.unpack_meta(body)
    except wire.WireError as error:
        raise BadRequest(f"The request body is not an SMPC message: {error}.") from None
    return _session_id(meta)
