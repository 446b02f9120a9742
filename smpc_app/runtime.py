"""Encrypted inference at run time: a worker evaluating its share, and the crypto provider dealing randomness.

A client sends each worker one share of its input (`worker_evaluate`). Each worker asks the model's
crypto provider for its half of the session's correlated randomness (`provider_deal`), then the two
workers run the rounds of `smpc_protocol.engine` against each other (`smpc_app.channels`) and each
answers its share of the output. Every node-to-node call goes to, and is accepted from, only the nodes
this node trusts (`smpc_app.trust`), in the role the model's registration gives them
(`provider_authorize`, `exchange_authorize`), signed (`smpc_app.nodeauth`). Only the client, adding
the two, sees the result. All of it, rounds included, ends within GRIDNODE_INFERENCE_TIMEOUT of the
request's arrival (`channels.Deadline`), or 504.

The provider derives a session's randomness from a seed it never sends whole: an HMAC, under a key made
from this node's SECRET_KEY, of a nonce it draws when the session is first asked for. Party 1 gets its
half; party 0 gets the seed's first part, from which its half alone is drawn (it draws it itself, while
the provider deals party 1's). A session row records the nonce and which party was served, so each
party's half is dealt once and a session id reused later gets fresh randomness (never the same triples
twice).
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
from django.db import connection
from django.utils import timezone

from gridnode.errors import BadGateway, BadRequest, Conflict, Forbidden, ServiceUnavailable
from smpc_app import nodeauth, registrations, trust
from smpc_app.channels import Deadline, NodeCall, PeerChannel, SessionMailbox, Traffic
from smpc_app.identity import node_identity
from smpc_app.models import ExchangeSession, NodeAssignment, RandomnessSession
from smpc_app.shares import share_load
from smpc_protocol import engine, randomness, wire

SESSION_ID = re.compile(r"^[0-9a-f]{32}$")
SESSION_RULE = "32 lowercase hexadecimal characters (128 random bits, fresh for every inference)"
# Provider rows older than this are deleted; far longer than any session can run.
SESSION_RECORD_DAYS = 1
# How often (one request in this many) the provider deletes those old rows.
PRUNE_ONE_IN = 100
_SEED_PURPOSE = b"gridnode smpc provider seed v1\x00"
# Where the provider's answer to party 0 carries the key party 0's half is drawn from.
PARTY_ZERO_KEY_META = "party_zero_key"


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
    party = share.party
    if party is None:  # never: a worker's share names its party (checked at upload)
        raise Conflict(f"This node's share of '{model_id}' names no party.")
    if "party" in meta and meta["party"] != party:
        raise Conflict(f"This node holds party {party}'s share of '{model_id}', not party {meta['party']}'s.")
    if inputs.dim() != len(spec.input_shape) + 1 or tuple(inputs.shape[1:]) != spec.input_shape:
        raise BadRequest(f"'x' must have shape [batch, {', '.join(map(str, spec.input_shape))}].")
    batch = _batch(inputs.shape[0])
    nodes = registrations.registration_nodes(share.registration_id)
    workers = nodes.workers
    if len(workers) != 2:
        raise Conflict(f"'{model_id}' is registered with {len(workers)} workers: encrypted inference runs on two.")
    provider_url = nodes.crypto_provider[0]
    peer_url = workers[1 - party]
    peer_key, provider_key = _trusted_nodes(model_id, party=party, workers=workers, provider_url=provider_url)
    traffic = Traffic()
    traffic.received += len(body)
    # Party 1 listens before anything else, so party 0's first message finds it as early as possible.
    channel: SessionMailbox | PeerChannel | None = None
    if party == 1:
        channel = SessionMailbox(
            session_id=session_id, model_id=model_id, peer_key=peer_key, traffic=traffic, deadline=deadline
        )
    try:
        bundle, bundle_id = _fetch_randomness(
            provider=NodeCall(
                url=provider_url,
                public_key=provider_key,
                who=f"The crypto provider at {provider_url}",
                deadline=deadline,
            ),
            model_id=model_id,
            session_id=session_id,
            party=party,
            batch=batch,
            spec=spec,
            spec_digest=share.spec_digest,
            traffic=traffic,
        )
        if channel is None:
            channel = PeerChannel(
                peer_url=peer_url,
                peer_key=peer_key,
                model_id=model_id,
                session_id=session_id,
                traffic=traffic,
                deadline=deadline,
            )
        evaluation = engine.Evaluation(
            spec=spec,
            part=part,
            party=party,
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
    meta = {"session": session_id, "party": party, "rounds": evaluation.rounds}
    return wire.pack({"y": output}, {**meta, "bytes_sent": traffic.sent, "bytes_received": traffic.received})


def _trusted_nodes(model_id: str, *, party: int, workers: list[str], provider_url: str) -> tuple[str, str]:
    """The public keys of this worker's peer and of the provider; a 409 unless this node trusts both.

    This node calls no address it does not trust, and a registration that names this node's own key in
    another role (or another node's key as this party) is refused: it could only be a mistake or a trap.
    """
    # This node's own address is normally on no list: its absence is no reason to read the list again.
    keys = trust.trusted_keys([*workers, provider_url], rarely_trusted=(workers[party],))
    peer_url = workers[1 - party]
    for url, role in ((peer_url, f"party {1 - party}"), (provider_url, "crypto provider")):
        if url not in keys:
            raise Conflict(
                f"'{model_id}' names {url} as its {role}, a node this node does not trust: "
                "its operator must add it (manage.py smpc_trust add URL KEY, or the admin)."
            )
    own = node_identity().public_key
    if own in (keys[peer_url], keys[provider_url]) or keys.get(workers[party], own) != own:
        raise Conflict(f"'{model_id}' is registered with this node in another place than party {party}'s.")
    return keys[peer_url], keys[provider_url]


def _fetch_randomness(*, provider: NodeCall, model_id, session_id, party, batch, spec, spec_digest, traffic):
    """This worker's half of the session's randomness from the crypto provider, checked against the spec."""
    timeout = settings.GRIDNODE_SMPC_TIMEOUT
    body = wire.pack({}, {"session": session_id, "party": party, "batch": batch, "spec_digest": spec_digest})
    what = f"the randomness of session {session_id}"
    reply = provider.post(
        f"/encrypted-models/{model_id}/randomness",
        body,
        purpose=nodeauth.RANDOMNESS,
        model_id=model_id,
        session_id=session_id,
        party=party,
        round_number=0,
        what=what,
        timeout=timeout,
    )
    traffic.sent += len(body)
    traffic.received += len(reply)
    bad_answer = f"{provider.who} gave a bad answer to {what}"
    try:
        bundle, meta = wire.unpack(reply)
    except wire.WireError:
        raise BadGateway(f"{bad_answer}: not an SMPC message.") from None
    if party == 0:
        bundle = _party_zero_bundle(meta.get(PARTY_ZERO_KEY_META), spec=spec, batch=batch, bad_answer=bad_answer)
    expected = randomness.bundle_shapes(spec, batch)
    if {name: tuple(tensor.shape) for name, tensor in bundle.items()} != expected:
        raise BadGateway(f"{bad_answer}: randomness for another model or batch.")
    bundle_id = meta.get("bundle_id")
    if not isinstance(bundle_id, str):
        raise BadGateway(f"{bad_answer}: randomness without its id.")
    return bundle, bundle_id


def _party_zero_bundle(key, *, spec, batch: int, bad_answer: str) -> dict:
    """Party 0's half of the session's randomness, drawn here from the key the provider sent."""
    if not isinstance(key, str) or len(key) != 2 * randomness.PARTY_ZERO_KEY_BYTES:
        raise BadGateway(f"{bad_answer}: no key for party 0's randomness.")
    try:
        return randomness.party_zero_bundle(spec=spec, batch=batch, key=bytes.fromhex(key))
    except ValueError:
        raise BadGateway(f"{bad_answer}: no key for party 0's randomness.") from None


def _signed_for(label: nodeauth.MessageLabel, model_id: str) -> None:
    """A 401 unless the request's signature names the model its path names."""
    if label.model_id != model_id:
        raise nodeauth.NodeAuthenticationFailed("The request is signed for another model than its path names.")


def provider_authorize(*, model_id: str, label: nodeauth.MessageLabel) -> None:
    """A 403 unless the signer is the trusted node this node's registration names as the party it asks for.

    Judged from the signed headers, before the body is read: party p's half goes to workers[p] only.
    """
    _signed_for(label, model_id)
    if not trust.is_registered_as(
        public_key=label.sender, model_id=model_id, role=NodeAssignment.Role.WORKER, position=label.party
    ):
        raise Forbidden(
            f"The signing node is not party {label.party} of '{model_id}' on this node "
            "(a trusted node at the address its registration names for that party)."
        )


def provider_deal(*, model_id: str, label: nodeauth.MessageLabel, body: bytes) -> bytes:
    """One worker's half of a session's correlated randomness (a packed message), dealt once per party.

    `label` is the request's checked signature (see `provider_authorize`); the body must say the same.
    """
    _tensors, meta = _unpack(body, "request body")
    session_id = _session_id(meta)
    party = meta.get("party")
    if session_id != label.session_id or party != label.party or isinstance(party, bool):
        raise BadRequest("The message's session and party must be the ones its signature names.")
    batch = _batch(meta.get("batch"))
    share, spec, provider_part = share_load(model_id=model_id, role="crypto_provider")
    if meta.get("spec_digest") != share.spec_digest:
        raise Conflict(f"The worker's model '{model_id}' is not the one this crypto provider holds a mask for.")
    nonce = _session_claim(session_id=session_id, model_id=model_id, batch=batch, party=party, node=label.sender)
    key = hashlib.sha256(_SEED_PURPOSE + settings.SECRET_KEY.encode()).digest()
    seed = hmac.new(key, nonce + session_id.encode(), hashlib.sha256).digest()
    # Lets the two workers check they hold halves of the same randomness without revealing the nonce.
    bundle_id = hashlib.sha256(b"bundle id\x00" + nonce).hexdigest()[:32]
    if party == 0:
        # Party 0's half is drawn from the seed's start alone: it gets that key and draws the half itself,
        # meanwhile this node deals party 1's (randomness.party_zero_bundle).
        party_zero_key = seed[: randomness.PARTY_ZERO_KEY_BYTES].hex()
        return wire.pack({}, {"bundle_id": bundle_id, PARTY_ZERO_KEY_META: party_zero_key})
    bundle = randomness.party_bundle(spec=spec, provider_part=provider_part, batch=batch, seed=seed, party=party)
    return wire.pack(bundle, {"bundle_id": bundle_id})


def _prune(model) -> None:
    """Now and then, delete a table's session rows older than SESSION_RECORD_DAYS."""
    if secrets.randbelow(PRUNE_ONE_IN) == 0:
        cutoff = timezone.now() - timedelta(days=SESSION_RECORD_DAYS)
        model.objects.filter(created_at__lt=cutoff).delete()


def _insert_returning(statement: str, params: list) -> tuple | None:
    """The row an INSERT ... RETURNING answers (None when it inserted nothing), committed on its own.

    On PostgreSQL it commits without waiting for the disk (see `_session_claim`), in one round trip: sent
    outside a transaction, the SET LOCAL and the INSERT of one query string run as one transaction
    (psycopg2 sends it as one simple query), where BEGIN, SET, INSERT and COMMIT took four.
    """
    if connection.vendor == "postgresql":
        statement = "SET LOCAL synchronous_commit TO OFF; " + statement
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchone()


def _session_claim(*, session_id: str, model_id: str, batch: int, party: int, node: str) -> bytes:
    """The session's nonce, after marking `party` served to `node`; a 409 when it was served before.

    One statement inserts the session or marks the party on the existing row, only when that party was
    not served yet and the other half did not go to the same node, so two requests for one party can
    never both get it and no node ever holds both halves. On PostgreSQL it commits without waiting for
    the disk: a crash may forget a session, and then a later request draws a new nonce, whose randomness
    the other party's does not match. The workers check that they hold the same randomness before their
    first exchange (`engine.Evaluation`), so such a session fails, never misleads.
    """
    _prune(RandomnessSession)
    served, node_column, other_node = f"served_party_{party}", f"party_{party}_node", f"party_{1 - party}_node"
    table = RandomnessSession._meta.db_table
    nodes = (node, "") if party == 0 else ("", node)
    claimed = _insert_returning(
        f"INSERT INTO {table} (session_id, model_id, batch, nonce, served_party_0, served_party_1, "
        "party_0_node, party_1_node, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
        f"ON CONFLICT (session_id) DO UPDATE SET {served} = %s, {node_column} = %s "
        f"WHERE {table}.{served} = %s AND {table}.{other_node} <> %s "
        "RETURNING model_id, batch, nonce",
        [session_id, model_id, batch, os.urandom(16), party == 0, party == 1, *nodes, timezone.now()]
        + [True, node, False, node],
    )
    if claimed is None:
        if RandomnessSession.objects.filter(session_id=session_id, **{other_node: node}).exists():
            raise Conflict(f"The other half of session {session_id} went to this same node: a node never gets both.")
        raise Conflict(f"Party {party}'s randomness for session {session_id} was already dealt: use a new session id.")
    claimed_model_id, claimed_batch, nonce = claimed
    if claimed_model_id != model_id or claimed_batch != batch:
        raise Conflict(f"Session {session_id} was started for another model or batch: use a fresh session id.")
    return bytes(nonce)


def exchange_authorize(label: nodeauth.MessageLabel) -> None:
    """For a session's first exchange: a 403 unless the signer is party 0 of the model where this node is
    party 1, then a 409 when that first message was accepted before (a replay). Later rounds are judged by
    the session's running evaluation alone (`channels.SessionMailbox`), so they cost no query.
    """
    if label.round != 0:
        return
    if label.party != 0 or not trust.is_registered_as(
        public_key=label.sender, model_id=label.model_id, role=NodeAssignment.Role.WORKER, position=0, our_party=1
    ):
        raise Forbidden(f"The signing node is not party 0 of '{label.model_id}', or this node is not its party 1.")
    _prune(ExchangeSession)
    table = ExchangeSession._meta.db_table
    # One statement, which the unique session id settles: a replay inserts nothing.
    recorded = _insert_returning(
        f"INSERT INTO {table} (session_id, model_id, peer_key, created_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (session_id) DO NOTHING RETURNING id",
        [label.session_id, label.model_id, label.sender, timezone.now()],
    )
    if recorded is None:
        raise Conflict(f"Session {label.session_id} was started on this node before: a message is accepted once.")
