"""How the two workers of a session swap their masked values, one round at a time.

Party 0 drives: for each round it POSTs its message to party 1's `/smpc/exchange` and reads party 1's
message for the same round in the answer (`PeerChannel`, one kept-alive connection per session).
The POST reaches whichever process of party 1's node the server picks, while party 1's evaluation runs
in the process that took the client's request. They meet through a Unix socket in Linux's abstract
namespace named after the node's data folder and the session (`SessionMailbox` on the evaluating side,
`deliver` in the exchange view), so every process of one node on one host can reach it; the socket
accepts connections from processes of the same user only. A node's processes must therefore share a host.

Every message carries the session id and its round number; one that does not follow the session's
order stops it with an error, never a wrong answer.

Each wait (a connect, a request, an answer, a round's message) lasts at most GRIDNODE_SMPC_TIMEOUT, and
never past the evaluation's `Deadline` (GRIDNODE_INFERENCE_TIMEOUT after the client's request arrived):
otherwise a peer answering every round just in time would hold a worker's thread for minutes.
"""

import contextlib
import hashlib
import http.client
import json
import os
import socket
import struct
import time
from urllib.parse import quote, urlsplit

import torch
from django.conf import settings

from gridnode.errors import BadGateway, Conflict, GatewayTimeout
from smpc_app.nodeauth import signed_headers
from smpc_protocol import wire

EXCHANGE_PATH = "/smpc/exchange"
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


def node_connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to a node and the path prefix its URL carries (nodes may live under a path)."""
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return connection_class(parts.hostname, parts.port, timeout=timeout), parts.path.rstrip("/")


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


def post_signed(
    connection: http.client.HTTPConnection,
    path: str,
    body: bytes,
    *,
    who: str,
    what: str,
    timeout: float,
    deadline: Deadline,
) -> bytes:
    """POST a signed SMPC message and answer the reply's bytes; a 502/504 naming `who` when it fails.

    Sending, waiting for the answer and reading it each take at most `timeout`, cut to the deadline.
    """
    headers = {"Content-Type": "application/octet-stream", **signed_headers("POST", path, body)}
    try:
        _wait_at_most(connection, deadline.cap(timeout))
        connection.request("POST", quote(path), body=body, headers=headers)
        _acknowledge_at_once(connection)
        _wait_at_most(connection, deadline.cap(timeout))
        response = connection.getresponse()
        _wait_at_most(connection, deadline.cap(timeout))
        reply = response.read()
    except TimeoutError:
        connection.close()
        raise deadline.timed_out(f"{who} did not answer {what} within {timeout:g} s.") from None
    except (OSError, http.client.HTTPException) as error:
        connection.close()
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise BadGateway(f"{who} could not be reached for {what}: {reason}.") from None
    if response.status != 200:
        raise BadGateway(f"{who} refused {what} ({response.status}): {_error_message(reply)}")
    return reply


def _error_message(reply: bytes) -> str:
    """The "error" text of a node's JSON error answer, or a note that it had none."""
    with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
        message = json.loads(reply).get("error")
        if isinstance(message, str):
            return message[:500]
    return "no error message"


def _check_reply_meta(meta: dict, *, session_id: str, round_number: int, who: str) -> None:
    if meta.get("session") != session_id or meta.get("round") != round_number:
        raise BadGateway(f"{who} answered for another session or round: the session is abandoned.")


class PeerChannel:
    """Party 0's side: one signed POST per round to party 1's node, whose answer is party 1's message."""

    def __init__(self, *, peer_url: str, model_id: str, session_id: str, traffic: Traffic, deadline: Deadline) -> None:
        self.timeout = settings.GRIDNODE_SMPC_TIMEOUT + ANSWER_MARGIN_SECONDS
        self.deadline = deadline
        self.connection, prefix = node_connection(peer_url, self.timeout)
        self.path = prefix + EXCHANGE_PATH
        self.who = f"The peer worker at {peer_url}"
        self.model_id, self.session_id, self.traffic = model_id, session_id, traffic
        self.round = 0

    def exchange(self, payload: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Send this round's message, answer the peer's."""
        meta = {"session": self.session_id, "model_id": self.model_id, "round": self.round}
        body = wire.pack(payload, meta)
        what = f"round {self.round} of session {self.session_id}"
        reply = post_signed(
            self.connection, self.path, body, who=self.who, what=what, timeout=self.timeout, deadline=self.deadline
        )
        self.traffic.sent += len(body)
        self.traffic.received += len(reply)
        try:
            tensors, reply_meta = wire.unpack(reply)
        except wire.WireError as error:
            raise BadGateway(f"{self.who} answered {what} with a malformed message: {error}") from None
        _check_reply_meta(reply_meta, session_id=self.session_id, round_number=self.round, who=self.who)
        self.round += 1
        return tensors

    def close(self) -> None:
        """Drop the kept-alive connection."""
        self.connection.close()


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


class SessionMailbox:
    """Party 1's side: waits for party 0's message of each round and hands back its own, via `deliver`."""

    def __init__(self, *, session_id: str, traffic: Traffic, deadline: Deadline | None = None) -> None:
        self.timeout = settings.GRIDNODE_SMPC_TIMEOUT
        self.deadline = deadline if deadline is not None else Deadline()
        self.session_id, self.traffic = session_id, traffic
        self.round = 0
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.socket.bind(_address(session_id))
        except OSError:
            self.socket.close()
            raise Conflict(f"Session {session_id} is already running on this node: use a fresh session id.") from None
        self.socket.listen(8)

    def exchange(self, payload: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Take party 0's message for this round, answer with ours."""
        round_ends = time.monotonic() + self.timeout
        what = f"round {self.round} of session {self.session_id}"
        silent = f"The peer worker sent nothing for {what} within {self.timeout:g} s."
        while True:
            wait = self.deadline.cap(round_ends - time.monotonic())
            if wait <= 0:
                raise GatewayTimeout(silent)
            self.socket.settimeout(wait)
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                raise self.deadline.timed_out(silent) from None
            with connection:
                if not _same_user(connection):
                    continue  # someone else on this host; the peer's message comes through our own processes
                connection.settimeout(self.deadline.cap(self.timeout))
                try:
                    message = _receive_frame(connection, settings.GRIDNODE_MAX_BODY_BYTES)
                    tensors, meta = wire.unpack(message)
                except (OSError, wire.WireError) as error:
                    if isinstance(error, TimeoutError) and self.deadline.passed():
                        raise self.deadline.exceeded() from None
                    raise BadGateway(f"The peer worker's message for {what} was broken: {error}") from None
                if meta.get("session") != self.session_id or meta.get("round") != self.round:
                    _send_frame(connection, wire.pack({}, {"error": f"this node expected {what}"}))
                    raise BadGateway(f"The peer worker sent a message out of order instead of {what}.")
                reply = wire.pack(payload, {"session": self.session_id, "round": self.round})
                try:
                    _send_frame(connection, reply)
                except OSError as error:
                    raise BadGateway(f"The peer worker's request for {what} went away: {error}") from None
            self.traffic.received += len(message)
            self.traffic.sent += len(reply)
            self.round += 1
            return tensors

    def close(self) -> None:
        """Stop listening: later messages for this session find nobody."""
        self.socket.close()


def deliver(*, session_id: str, message: bytes) -> bytes:
    """Hand party 0's message to this node's evaluation of the session and answer party 1's reply."""
    timeout = settings.GRIDNODE_SMPC_TIMEOUT
    deadline = time.monotonic() + timeout
    # The client's request to this node may arrive after party 0's first message: wait for it.
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(_address(session_id))
            break
        except (ConnectionRefusedError, FileNotFoundError):
            connection.close()
            if time.monotonic() >= deadline:
                raise GatewayTimeout(
                    f"No evaluation of session {session_id} is running on this node "
                    f"(nothing within {timeout:g} s): did the client reach it?"
                ) from None
            time.sleep(_CONNECT_RETRY_SECONDS)
    with connection:
        connection.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            _send_frame(connection, message)
            reply = _receive_frame(connection, settings.GRIDNODE_MAX_BODY_BYTES)
        except TimeoutError:
            raise GatewayTimeout(f"This node's evaluation of session {session_id} did not answer in time.") from None
        except OSError:
            raise BadGateway(f"This node's evaluation of session {session_id} stopped.") from None
    with contextlib.suppress(wire.WireError):
        meta = wire.unpack_meta(reply)  # party 0 reads the tensors
        if isinstance(meta.get("error"), str):
            raise Conflict(f"This node refused the message: {meta['error']}.")
    return reply
