"""How a worker calls the other nodes of a session, and how the two workers swap masked values each round.

Every call goes to a node this node trusts, signed for that node's key, and its answer must carry that
key's signature (`smpc_app.nodeauth`); connections to peers are kept alive between sessions (`NodeCall`).
Party 0 drives: for each round it POSTs its message to party 1's `/smpc/exchange` and reads party 1's
message for the same round in the answer (`PeerChannel`).
The POST reaches whichever process of party 1's node the server picks, while party 1's evaluation runs
in the process that took the client's request. They meet (`SessionMailbox` on the evaluating side,
`deliver` in the exchange view) through a Unix socket in Linux's abstract namespace named after the
node's data folder and the session, so every process of one node on one host can reach it (the socket
accepts connections from processes of the same user only); or, with GRIDNODE_BROKER_URL, through Redis
(`smpc_app.broker`), so the POST may reach any replica of the node on any host. Both carry the same
messages, judged the same way.

Every message carries the session id and its round number; party 1's evaluation accepts each round
once, from its peer's key only, before the message's body is even read (`deliver`). A replayed message
is refused and the session goes on; its peer sending out of order stops it with an error, never a
wrong answer.

Each wait (a connect, a request, an answer, a round's message) lasts at most GRIDNODE_SMPC_TIMEOUT, and
never past the evaluation's `Deadline` (GRIDNODE_INFERENCE_TIMEOUT after the client's request arrived):
otherwise a peer answering every round just in time would hold a worker's thread for minutes.
"""

import contextlib
import hashlib
import http.client
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from urllib.parse import quote, urlsplit

import torch
from django.conf import settings

from gridclient.transport import IdleConnections, tls_context
from gridnode.errors import BadGateway, Conflict, GatewayTimeout
from smpc_app import broker, nodeauth
from smpc_app.identity import node_identity, verify_signature
from smpc_protocol import wire

logger = logging.getLogger(__name__)

EXCHANGE_PATH = "/smpc/exchange"
# A message body up to this size is read before the session's evaluation judges its label, and handed over
# with it in one step (every round of the reference MLP is a few KB); a larger one only once it is accepted.
INLINE_BODY_BYTES = 256 * 1024
# Where the first round and its answer carry the workers' exchange keys (see smpc_app.nodeauth).
SESSION_KEY_META = "session_key"
# Party 0 waits this much longer for an answer than party 1's node waits for its side of a session, so
# that party 1's own, more precise, error ("no evaluation of this session here") reaches it first. Near
# the deadline, which both parties count from their own request's arrival, the margin gives way: once
# the time is up each party answers its client the deadline's 504, the most precise error there is then.
ANSWER_MARGIN_SECONDS = 2
_FRAME_LENGTH = struct.Struct(">Q")
_CONNECT_RETRY_SECONDS = 0.002


class Deadline:
    """When one evaluation must be over: GRIDNODE_INFERENCE_TIMEOUT seconds after its request arrived (now).

    The evaluation is the node's own code, whose compute the spec's sizes bound, so a cooperative stop is
    enough: each wait is cut to the time left, and none starts once the time is up.
    """

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = settings.GRIDNODE_INFERENCE_TIMEOUT if seconds is None else seconds
        self.at = time.monotonic() + self.seconds

    def passed(self) -> bool:
        """Whether the time is up."""
        return time.monotonic() >= self.at

    def cap(self, timeout: float) -> float:
        """`timeout`, or the time left when that is shorter; the deadline's 504 when no time is left."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.exceeded()
        return min(timeout, left)

    def exceeded(self) -> GatewayTimeout:
        """The 504 naming the limit."""
        return GatewayTimeout(
            f"The encrypted inference did not finish within this node's limit of {self.seconds:g} seconds "
            "(GRIDNODE_INFERENCE_TIMEOUT)."
        )

    def timed_out(self, message: str) -> GatewayTimeout:
        """The 504 for a wait that ran out: the deadline's when it was cut by it, else the wait's own `message`."""
        return self.exceeded() if self.passed() else GatewayTimeout(message)


class Traffic:
    """Bytes one worker sent and received during a session, for the client's figures."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0


# Idle kept-alive connections to peers, at most IdleConnections.MAX_PER_NODE per peer (the client's rules).
_idle = IdleConnections()


def _new_connection(scheme: str, host: str, port: int, timeout: float) -> http.client.HTTPConnection:
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=tls_context())
    return http.client.HTTPConnection(host, port, timeout=timeout)


class NodeCall:
    """Signed requests to one trusted node over a kept-alive connection taken from this process's pool.

    Failures are told apart (unreachable, timed out, refused, bad answer) and named with the node's role
    and address; what the node said is logged for the operator, never passed on to the client.
    """

    def __init__(self, *, url: str, public_key: str, who: str, deadline: Deadline) -> None:
        parts = urlsplit(url)
        self.url, self.public_key, self.who, self.deadline = url, public_key, who, deadline
        self.prefix = parts.path.rstrip("/")
        self._peer = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        self._connection: http.client.HTTPConnection | None = None
        self._reused = False

    def _take(self, timeout: float) -> http.client.HTTPConnection:
        if self._connection is not None:
            return self._connection
        kept = _idle.take(self._peer)
        if kept is not None:
            self._connection, self._reused = kept, True
            return kept
        self._connection, self._reused = _new_connection(*self._peer, timeout), False
        return self._connection

    def close(self, *, keep: bool = True) -> None:
        """Give the connection back to the pool (or close it when `keep` is false)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if keep and connection.sock is not None:
            _idle.give_back(self._peer, connection)
            return
        connection.close()

    def post(
        self,
        path: str,
        body: bytes,
        *,
        purpose: str,
        model_id: str,
        session_id: str,
        party: int,
        round_number: int,
        what: str,
        timeout: float,
        session_key: bytes | None = None,
    ) -> bytes:
        """POST a signed message and answer the reply's bytes once its signature is checked; else a 502/504.

        Signed with this node's key, or with `session_key` for an exchange session's later rounds.
        """
        identity = node_identity()
        header = nodeauth.request_label(
            purpose=purpose,
            sender=identity.public_key,
            recipient=self.public_key,
            model_id=model_id,
            session_id=session_id,
            party=party,
            round_number=round_number,
            body=body,
        ).text()
        if session_key is None:
            signature = identity.sign(nodeauth.signed_text(header))
        else:
            signature = nodeauth.session_mac(session_key, header)
        headers = {
            "Content-Type": "application/octet-stream",
            nodeauth.MESSAGE_HEADER: header,
            nodeauth.SIGNATURE_HEADER: signature,
        }
        target = quote(self.prefix + path)
        for attempt in (0, 1):
            connection = self._take(timeout)
            try:
                status, reply_headers, reply = self._send(connection, target, body, headers, timeout)
                break
            except TimeoutError:
                self.close(keep=False)
                raise self.deadline.timed_out(
                    f"{self.who} timed out: no answer to {what} within {timeout:g} s."
                ) from None
            except (OSError, http.client.HTTPException) as error:
                reused = self._reused
                self.close(keep=False)
                # A kept-alive connection the peer closed meanwhile fails before the request reached it: once more.
                if attempt == 0 and reused and isinstance(error, _STALE_ERRORS):
                    continue
                logger.warning("SMPC: %s unreachable for %s: %r", self.who, what, error)
                raise BadGateway(f"{self.who} is unreachable: {what} could not be sent or answered.") from None
            except BaseException:
                self.close(keep=False)  # the deadline cut it mid-request: the connection is in no state to reuse
                raise
        if status != 200:
            self.close()
            logger.warning("SMPC: %s refused %s (%s): %s", self.who, what, status, _error_text(reply))
            raise BadGateway(f"{self.who} refused {what} (HTTP {status}).")
        reply_header = reply_headers.get(nodeauth.REPLY_HEADER, "")
        reply_signature = reply_headers.get(nodeauth.REPLY_SIGNATURE_HEADER, "")
        if session_key is None:
            signed = nodeauth.reply_is_signed(
                sender=self.public_key,
                request_signature=signature,
                status=status,
                header=reply_header,
                signature=reply_signature,
                body=reply,
            )
        else:
            signed = nodeauth.session_reply_matches(
                session_key,
                sender=self.public_key,
                request_signature=signature,
                status=status,
                header=reply_header,
                signature=reply_signature,
                body=reply,
            )
        if not signed:
            self.close(keep=False)
            raise BadGateway(f"{self.who} gave a bad answer to {what}: the reply is not signed by its key.")
        self.close()
        return reply

    def _send(self, connection: http.client.HTTPConnection, target: str, body: bytes, headers: dict, timeout: float):
        _wait_at_most(connection, self.deadline.cap(timeout))
        connection.request("POST", target, body=body, headers=headers)
        _acknowledge_at_once(connection)
        _wait_at_most(connection, self.deadline.cap(timeout))
        response = connection.getresponse()
        _wait_at_most(connection, self.deadline.cap(timeout))
        reply = response.read()
        if response.will_close:
            connection.close()
        return response.status, response.headers, reply


_STALE_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def _error_text(reply: bytes) -> str:
    """A node's JSON error text, for this node's log only."""
    with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
        message = json.loads(reply).get("error")
        if isinstance(message, str):
            return message[:500]
    return "no error message"


def _acknowledge_at_once(connection: http.client.HTTPConnection) -> None:
    """Ask Linux to acknowledge the answer's first segment at once rather than up to 40 ms later.

    A server that writes its status and headers, then its body, in two sends with Nagle's algorithm on
    (Django's runserver does) holds the body back until the headers are acknowledged: measured, every
    round of an inference between runserver nodes took 45 ms instead of 2.
    """
    quick_ack = getattr(socket, "TCP_QUICKACK", None)
    if quick_ack is not None and connection.sock is not None:
        with contextlib.suppress(OSError):
            connection.sock.setsockopt(socket.IPPROTO_TCP, quick_ack, 1)


def _wait_at_most(connection: http.client.HTTPConnection, seconds: float) -> None:
    """Bound the connection's next socket operations (the connect too, when it has no socket yet)."""
    connection.timeout = seconds
    if connection.sock is not None:
        connection.sock.settimeout(seconds)


class PeerChannel:
    """Party 0's side: one signed POST per round to party 1's node, whose signed answer is party 1's message.

    The first round is signed with this node's key and carries a fresh exchange key; later rounds with
    the session key both workers derive from it (`smpc_app.nodeauth`).
    """

    def __init__(
        self, *, peer_url: str, peer_key: str, model_id: str, session_id: str, traffic: Traffic, deadline: Deadline
    ) -> None:
        self.timeout = settings.GRIDNODE_SMPC_TIMEOUT + ANSWER_MARGIN_SECONDS
        self.call = NodeCall(url=peer_url, public_key=peer_key, who=f"The peer worker at {peer_url}", deadline=deadline)
        self.model_id, self.session_id, self.traffic = model_id, session_id, traffic
        self.round = 0
        self._exchange_key, self._exchange_public = nodeauth.new_exchange_key()
        self._session_key: bytes | None = None

    def exchange(self, payload: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Send this round's message, answer the peer's."""
        meta = {"session": self.session_id, "model_id": self.model_id, "round": self.round}
        if self.round == 0:
            meta[SESSION_KEY_META] = self._exchange_public
        body = wire.pack(payload, meta)
        what = f"round {self.round} of session {self.session_id}"
        reply = self.call.post(
            EXCHANGE_PATH,
            body,
            purpose=nodeauth.EXCHANGE,
            model_id=self.model_id,
            session_id=self.session_id,
            party=0,
            round_number=self.round,
            what=what,
            timeout=self.timeout,
            session_key=self._session_key,
        )
        self.traffic.sent += len(body)
        self.traffic.received += len(reply)
        try:
            tensors, reply_meta = wire.unpack(reply)
        except wire.WireError:
            raise BadGateway(f"{self.call.who} gave a bad answer to {what}: not an SMPC message.") from None
        if reply_meta.get("session") != self.session_id or reply_meta.get("round") != self.round:
            raise BadGateway(f"{self.call.who} gave a bad answer to {what}: another session or round.")
        if self.round == 0:
            self._session_key = nodeauth.session_key(
                self._exchange_key,
                reply_meta.get(SESSION_KEY_META),
                sender=node_identity().public_key,
                recipient=self.call.public_key,
                model_id=self.model_id,
                session_id=self.session_id,
            )
            if self._session_key is None:
                raise BadGateway(f"{self.call.who} gave a bad answer to {what}: no session key.")
        self.round += 1
        return tensors

    def close(self) -> None:
        """Give the kept-alive connection back (a failed request already dropped it)."""
        self.call.close()


def _address(session_id: str) -> bytes:
    """The abstract Unix socket address of one session on this node (its data folder tells nodes apart)."""
    node = hashlib.sha256(str(settings.DATA_DIR.resolve()).encode()).hexdigest()[:20]
    return f"\0gridnode-smpc/{node}/{session_id}".encode()


def _send_frame(connection: socket.socket, data: bytes) -> None:
    connection.sendall(_FRAME_LENGTH.pack(len(data)) + data)


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = connection.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError("the other process closed the session socket")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _receive_frame(connection: socket.socket, limit: int) -> bytes:
    (size,) = _FRAME_LENGTH.unpack(_receive_exactly(connection, _FRAME_LENGTH.size))
    if size > limit:
        raise ConnectionError("a session message larger than this node accepts")
    return _receive_exactly(connection, size)


def _same_user(connection: socket.socket) -> bool:
    """Whether the process at the other end runs as this process's user (Linux SO_PEERCRED)."""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return uid == os.getuid()


_ACCEPTED = b"ok"


class SessionMailbox:
    """Party 1's side: takes party 0's message of each round, once, and hands back its own, via `deliver`.

    A message reaches it with its label (sender, model, round, signature) first: accepted only from the
    session's peer, for the round it waits for, and after the first round only under the session key.
    A large body is read from the network only once its label is accepted. A replayed or stray message is
    refused without ending the session; the peer's own message breaking the order it signed ends it.
    """

    def __init__(
        self, *, session_id: str, model_id: str, peer_key: str, traffic: Traffic, deadline: Deadline | None = None
    ) -> None:
        self.timeout = settings.GRIDNODE_SMPC_TIMEOUT
        self.deadline = deadline if deadline is not None else Deadline()
        self.session_id, self.model_id, self.peer_key, self.traffic = session_id, model_id, peer_key, traffic
        self.round = 0
        self._session_key: bytes | None = None
        self.socket: socket.socket | None = None
        self._inbox: broker.SessionInbox | None = None
        taken = Conflict(f"Session {session_id} is already running on this node: use a fresh session id.")
        hub = broker.current()
        if hub is not None:
            keys = broker.SessionKeys.of(node_identity().public_key, session_id)
            lasts = max(0.0, self.deadline.at - time.monotonic())
            try:
                self._inbox = broker.SessionInbox(hub, keys, lasts=lasts, timeout=self.timeout)
            except broker.SessionTaken:
                raise taken from None
            return
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(_address(session_id))
        except OSError:
            listener.close()
            raise taken from None
        listener.listen(8)
        self.socket = listener

    def _refusal(self, envelope: dict) -> str | None:
        """Why a message's label is not this session's next one from its peer (None when it is)."""
        header, signature = envelope.get("header"), envelope.get("signature")
        if not isinstance(header, str) or not isinstance(signature, str):
            return "a malformed label"
        label = nodeauth.parse_label(header)
        if label is None:
            return "a malformed label"
        if label.sender != self.peer_key or label.party != 0:
            return "the message is signed by a node that is not this session's party 0"
        if label.model_id != self.model_id or label.session_id != self.session_id:
            return "the message is for another model or session than this one"
        if label.round != self.round:
            return f"this session waits for round {self.round}, not round {label.round}"
        if self.round > 0 and not (
            self._session_key is not None and nodeauth.session_mac_matches(self._session_key, header, signature)
        ):
            return "the message is not signed with this session's key"
        return None

    def _reply(self, payload: dict[str, torch.Tensor], meta: dict, request_signature: str) -> tuple[bytes, bytes]:
        """This round's answer and its signature headers (empty for the first round: `deliver` signs it)."""
        reply_meta = {"session": self.session_id, "round": self.round}
        headers = {}
        if self.round == 0:
            exchange_key, exchange_public = nodeauth.new_exchange_key()
            self._session_key = nodeauth.session_key(
                exchange_key,
                meta.get(SESSION_KEY_META),
                sender=self.peer_key,
                recipient=node_identity().public_key,
                model_id=self.model_id,
                session_id=self.session_id,
            )
            if self._session_key is None:
                raise BadGateway(f"The peer worker's first message of session {self.session_id} had no session key.")
            reply_meta[SESSION_KEY_META] = exchange_public
        reply = wire.pack(payload, reply_meta)
        if self.round > 0:
            if self._session_key is None:  # _refusal lets no later round through without one
                raise BadGateway(f"Session {self.session_id} has no session key for round {self.round}.")
            headers = nodeauth.session_reply_headers(
                self._session_key,
                sender=node_identity().public_key,
                request_signature=request_signature,
                status=200,
                body=reply,
            )
        return reply, json.dumps(headers).encode()

    def _forged(self, header: str, signature: str, body: bytes | None) -> str | None:
        """Why a message the broker brought is not the one its sender signed (None when it is).

        What `deliver` checked already, checked again here, so that whoever can write to the broker cannot
        slip a message of their own into the session: the first round's signature, and the body's digest.
        """
        label = nodeauth.parse_label(header)
        if label is None:
            return "a malformed label"
        if body is not None and (len(body) != label.length or hashlib.sha256(body).hexdigest() != label.body_sha256):
            return "the message's body is not the one its sender signed"
        if label.round == 0 and not verify_signature(label.sender, signature, nodeauth.signed_text(header)):
            return "the message's node signature does not match"
        return None

    def exchange(self, payload: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Take party 0's message for this round, answer with ours."""
        if self._inbox is not None:
            return self._exchange_brokered(self._inbox, payload)
        listener = self.socket
        if listener is None:
            raise BadGateway(f"Session {self.session_id} is over on this node.")
        round_ends = time.monotonic() + self.timeout
        what = f"round {self.round} of session {self.session_id}"
        silent = f"The peer worker sent nothing for {what} within {self.timeout:g} s."
        while True:
            wait = self.deadline.cap(round_ends - time.monotonic())
            if wait <= 0:
                raise GatewayTimeout(silent)
            listener.settimeout(wait)
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                raise self.deadline.timed_out(silent) from None
            with connection:
                if not _same_user(connection):
                    continue  # someone else on this host; the peer's message comes through our own processes
                connection.settimeout(self.deadline.cap(self.timeout))
                try:
                    envelope = json.loads(_receive_frame(connection, 4096))
                    if not isinstance(envelope, dict):
                        envelope = {}
                    inline = envelope.get("inline") is True
                    # A large message is sent only once accepted (below).
                    message = _receive_frame(connection, INLINE_BODY_BYTES) if inline else b""
                    refusal = self._refusal(envelope)
                    if refusal is not None:
                        _send_frame(connection, refusal.encode())
                        continue  # a replay or a stranger: refused, and the session goes on
                    if not inline:
                        _send_frame(connection, _ACCEPTED)
                        message = _receive_frame(connection, settings.GRIDNODE_MAX_BODY_BYTES)
                    tensors, meta = wire.unpack(message)
                except (OSError, ValueError) as error:
                    if isinstance(error, TimeoutError) and self.deadline.passed():
                        raise self.deadline.exceeded() from None
                    raise BadGateway(f"The peer worker's message for {what} was broken.") from None
                if meta.get("session") != self.session_id or meta.get("round") != self.round:
                    answer = [wire.pack({}, {"error": f"this node expected {what}"}), b"{}"]
                    _send_frames(connection, [_ACCEPTED, *answer] if inline else answer)
                    raise BadGateway(f"The peer worker sent a message out of order instead of {what}.")
                reply, reply_headers = self._reply(payload, meta, envelope["signature"])
                try:
                    _send_frames(connection, [_ACCEPTED, reply, reply_headers] if inline else [reply, reply_headers])
                except OSError:
                    raise BadGateway(f"The peer worker's request for {what} went away.") from None
            self.traffic.received += len(message)
            self.traffic.sent += len(reply)
            self.round += 1
            return tensors

    def _exchange_brokered(
        self, inbox: broker.SessionInbox, payload: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """`exchange` through the broker: the same judgement, each message taken from the session's inbox."""
        round_ends = time.monotonic() + self.timeout
        what = f"round {self.round} of session {self.session_id}"
        silent = f"The peer worker sent nothing for {what} within {self.timeout:g} s."
        broken = f"The peer worker's message for {what} was broken."
        while True:
            wait = self.deadline.cap(round_ends - time.monotonic())
            if wait <= 0:
                raise GatewayTimeout(silent)
            message = inbox.take(wait)
            if message is None:
                raise self.deadline.timed_out(silent)
            header, signature = message.label.get("header"), message.label.get("signature")
            inline = message.label.get("inline") is True
            refusal = self._refusal(message.label)
            if refusal is None and isinstance(header, str) and isinstance(signature, str):
                refusal = self._forged(header, signature, message.body if inline else None)
            if refusal is not None or not isinstance(header, str) or not isinstance(signature, str):
                inbox.answer(message, broker.REFUSED, (refusal or "a malformed label").encode())
                continue  # a replay or a stranger: refused, and the session goes on
            body = message.body
            if not inline:
                inbox.answer(message, broker.ACCEPTED)
                sent = inbox.take_body(message, settings.GRIDNODE_MAX_BODY_BYTES, self.deadline.cap(self.timeout))
                if sent is None:
                    if self.deadline.passed():
                        raise self.deadline.exceeded()
                    raise BadGateway(broken)
                if self._forged(header, signature, sent) is not None:
                    raise BadGateway(broken)
                body = sent
            try:
                tensors, meta = wire.unpack(body)
            except ValueError:
                raise BadGateway(broken) from None
            if meta.get("session") != self.session_id or meta.get("round") != self.round:
                inbox.reply(message, wire.pack({}, {"error": f"this node expected {what}"}), b"{}")
                raise BadGateway(f"The peer worker sent a message out of order instead of {what}.")
            reply, reply_headers = self._reply(payload, meta, signature)
            inbox.reply(message, reply, reply_headers)
            self.traffic.received += len(body)
            self.traffic.sent += len(reply)
            self.round += 1
            return tensors

    def close(self) -> None:
        """Stop listening: later messages for this session find nobody."""
        if self._inbox is not None:
            self._inbox.close()
        if self.socket is not None:
            self.socket.close()


def _send_frames(connection: socket.socket, frames: list[bytes]) -> None:
    connection.sendall(b"".join(_FRAME_LENGTH.pack(len(frame)) + frame for frame in frames))


def _connect(session_id: str, *, wait: bool, timeout: float) -> socket.socket:
    """A connection to this node's evaluation of the session; with `wait`, for one that is about to start."""
    deadline = time.monotonic() + timeout
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(_address(session_id))
            return connection
        except (ConnectionRefusedError, FileNotFoundError):
            connection.close()
            if not wait:
                raise Conflict(f"No evaluation of session {session_id} is running on this node.") from None
            if time.monotonic() >= deadline:
                raise GatewayTimeout(
                    f"No evaluation of session {session_id} is running on this node "
                    f"(nothing within {timeout:g} s): did the client reach it?"
                ) from None
            time.sleep(_CONNECT_RETRY_SECONDS)


def deliver(
    *, label: nodeauth.MessageLabel, header: str, signature: str, read_body: Callable[[], bytes]
) -> tuple[bytes, dict[str, str]]:
    """Hand party 0's signed message to this node's evaluation of its session: (party 1's reply, its
    signature headers, or {} for a first round, whose reply the caller signs with this node's key).

    The evaluation judges the label (see `SessionMailbox`); a body larger than INLINE_BODY_BYTES is read
    from the network only after that. A first round may arrive before the client's request to this node,
    so only round 0 waits for the evaluation to start (and round 0 is accepted once per session, see
    `runtime.exchange_authorize`). Through the broker when GRIDNODE_BROKER_URL is set (the evaluation
    may run on another replica), else through the local socket.
    """
    hub = broker.current()
    if hub is not None:
        reply, reply_headers = _deliver_brokered(
            hub, label=label, header=header, signature=signature, read_body=read_body
        )
    else:
        reply, reply_headers = _deliver_local(label=label, header=header, signature=signature, read_body=read_body)
    with contextlib.suppress(wire.WireError):
        meta = wire.unpack_meta(reply)  # party 0 reads the tensors
        if isinstance(meta.get("error"), str):
            raise Conflict(f"This node refused the message: {meta['error']}.")
    return reply, reply_headers


def _deliver_brokered(
    hub: broker.Broker,
    *,
    label: nodeauth.MessageLabel,
    header: str,
    signature: str,
    read_body: Callable[[], bytes],
) -> tuple[bytes, dict[str, str]]:
    """`deliver` through the broker, to the evaluation of the session on whichever replica runs it."""
    timeout = settings.GRIDNODE_SMPC_TIMEOUT
    session_id = label.session_id
    inline = label.length <= INLINE_BODY_BYTES
    body = read_body() if inline else b""
    ends = time.monotonic() + timeout
    late = GatewayTimeout(f"This node's evaluation of session {session_id} did not answer in time.")
    outgoing = broker.Outgoing(hub, broker.SessionKeys.of(node_identity().public_key, session_id), timeout=timeout)
    envelope = {"header": header, "signature": signature, "inline": inline}
    answer = outgoing.send(envelope, body, need_session=label.round != 0, wait=timeout)
    if answer is None:
        if outgoing.withdraw() and label.round == 0:
            raise GatewayTimeout(
                f"No evaluation of session {session_id} is running on this node "
                f"(nothing within {timeout:g} s): did the client reach it?"
            )
        raise late
    if answer.kind == broker.ACCEPTED and not inline:
        try:
            body = read_body()
        except BaseException:
            outgoing.abandon()  # the evaluation stops waiting for it at once
            raise
        answer = outgoing.send_body(body, wait=max(0.0, ends - time.monotonic()))
        if answer is None:
            raise late
    if answer.kind == broker.REPLY:
        return broker.split_reply(answer.data)
    if answer.kind == broker.NO_SESSION:
        raise Conflict(f"No evaluation of session {session_id} is running on this node.")
    if answer.kind == broker.BUSY:
        raise Conflict(f"This node refused the message: too many messages wait for session {session_id}.")
    if answer.kind == broker.REFUSED:
        raise Conflict(f"This node refused the message: {answer.data[:500].decode('utf-8', 'replace')}.")
    raise BadGateway(f"This node's evaluation of session {session_id} stopped.")


def _deliver_local(
    *, label: nodeauth.MessageLabel, header: str, signature: str, read_body: Callable[[], bytes]
) -> tuple[bytes, dict[str, str]]:
    """`deliver` through the abstract Unix socket of the session's evaluation on this host."""
    timeout = settings.GRIDNODE_SMPC_TIMEOUT
    session_id = label.session_id
    inline = label.length <= INLINE_BODY_BYTES
    body = read_body() if inline else b""
    started = time.monotonic()
    connection = _connect(session_id, wait=label.round == 0, timeout=timeout)
    with connection:
        connection.settimeout(max(0.1, started + timeout - time.monotonic()))
        try:
            envelope = json.dumps({"header": header, "signature": signature, "inline": inline}).encode()
            _send_frames(connection, [envelope, body] if inline else [envelope])
            verdict = _receive_frame(connection, 4096)
            if verdict != _ACCEPTED:
                raise Conflict(f"This node refused the message: {verdict.decode('utf-8', 'replace')}.")
            if not inline:
                _send_frame(connection, read_body())
            reply = _receive_frame(connection, settings.GRIDNODE_MAX_BODY_BYTES)
            reply_headers = json.loads(_receive_frame(connection, 4096))
        except TimeoutError:
            raise GatewayTimeout(f"This node's evaluation of session {session_id} did not answer in time.") from None
        except (OSError, ValueError):
            raise BadGateway(f"This node's evaluation of session {session_id} stopped.") from None
    return reply, reply_headers
