"""Round messages of encrypted inference through Redis, so a node may run as replicas on several hosts.

With GRIDNODE_BROKER_URL set, party 0's exchange may reach any process of any replica of party 1's node
(`channels.deliver`), while party 1's evaluation runs in the process that took the client's request
(`channels.SessionMailbox`). They meet in Redis, under keys named after this node's public key (which
every replica of one node shares) and the session:

    gridnode:smpc:<node>:<session>:live        set while the evaluation runs (SET NX: one per session)
    gridnode:smpc:<node>:<session>:in          the messages waiting for it (a list, at most MAX_QUEUED)
    gridnode:smpc:<node>:<session>:re:<id>     the answers to one message (a list its sender pops)
    gridnode:smpc:<node>:<session>:body:<id>   a large message's body, sent once its label was accepted

A message is pushed with its label and signature (and its body, up to channels.INLINE_BODY_BYTES); the
evaluation judges the label as it does a socket's, answers a refusal, an acceptance asking for a large
body, or its reply. Every key expires (the evaluation's deadline, or GRIDNODE_SMPC_TIMEOUT, plus a
margin), every value is bounded (a label, a body no longer than its signed length), every wait is a
BLPOP cut to the time left and read with a socket timeout only a little longer, so a stalled Redis
fails a round (502) rather than holding a thread.

Commands go out on connections taken from this process's pool, pipelined (a message and the wait for
its answer are one round trip), without redis-py's retries: a round that fails is the session's error.
"""

import contextlib
import functools
import hashlib
import json
import logging
import secrets
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from gridnode.errors import BadGateway

logger = logging.getLogger(__name__)

# Messages one session's inbox holds at once (the local socket's listen backlog is as many); more: a 409.
MAX_QUEUED = 8
# Seconds a key outlives the longest wait on it, so that nothing is removed while it may still be read.
EXPIRY_MARGIN_SECONDS = 5
# A blocking read is abandoned this long after Redis itself should have answered (its own timeout elapsed).
READ_MARGIN_SECONDS = 0.25
CONNECT_TIMEOUT_SECONDS = 2.0
WRITE_TIMEOUT_SECONDS = 2.0
# Kinds of answers, each a value's first byte.
REFUSED = b"R"  # + why
ACCEPTED = b"A"  # send the body
REPLY = b"M"  # + the reply headers' length (4 bytes) + the headers (JSON) + the reply
NO_SESSION = b"N"  # pushed by PUSH_SCRIPT itself: no evaluation of this session runs
BUSY = b"B"  # likewise: its inbox is full
_LENGTH = struct.Struct(">I")
MAX_LABEL_BYTES = 4096

# KEYS: live, inbox, reply; ARGV: message, whether the session must be running (1/0), MAX_QUEUED, expiry (ms).
# A message that cannot be queued gets its answer at once, so its sender's BLPOP (same pipeline) returns.
PUSH_SCRIPT = """
local refusal = nil
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then
  refusal = 'N'
elseif redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[3]) then
  refusal = 'B'
end
if refusal then
  redis.call('RPUSH', KEYS[3], refusal)
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""
# KEYS: live, inbox; ARGV: the evaluation's token, the session's key prefix, expiry (ms). Only the evaluation
# that set `live` removes it; the messages still queued are answered NO_SESSION, as later ones will be.
CLOSE_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local waiting = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[1], KEYS[2])
for _, message in ipairs(waiting) do
  local id = string.match(message, '"reply": "(%x+)"')
  if id and #id == 32 then
    local key = ARGV[2] .. ':re:' .. id
    redis.call('RPUSH', key, 'N')
    redis.call('PEXPIRE', key, ARGV[3])
  end
end
return #waiting
"""


class BrokerFailed(BadGateway):
    """Redis could not be reached, or did not answer in time: the round fails with a 502."""


class SessionTaken(Exception):
    """An evaluation of this session already runs on this node (on this replica or another)."""


class Broker:
    """This process's connections to one Redis (GRIDNODE_BROKER_URL), and the commands of a round."""

    def __init__(self, url: str) -> None:
        self.pool = redis.ConnectionPool.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=WRITE_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )

    def run(self, commands: Sequence[Sequence[str | bytes | int | float]], *, wait: float) -> list[object]:
        """Send `commands` in one pipeline and answer their replies; each read lasts at most `wait` seconds
        (plus READ_MARGIN_SECONDS when the last command blocks for `wait` itself)."""
        try:
            connection = self.pool.get_connection()  # connects when it has to
        except (redis.RedisError, OSError) as error:
            logger.warning("SMPC: the broker is unreachable: %r", error)
            raise BrokerFailed("This node's broker (GRIDNODE_BROKER_URL) is unreachable or did not answer.") from None
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            return [connection.read_response(timeout=wait + READ_MARGIN_SECONDS) for _ in commands]
        except (redis.RedisError, OSError) as error:
            connection.disconnect()
            logger.warning("SMPC: the broker failed: %r", error)
            raise BrokerFailed("This node's broker (GRIDNODE_BROKER_URL) is unreachable or did not answer.") from None
        except BaseException:
            connection.disconnect()  # its answers are unread: never give it back
            raise
        finally:
            self.pool.release(connection)


_brokers: dict[str, Broker] = {}
_brokers_lock = threading.Lock()


def current() -> Broker | None:
    """This process's broker when GRIDNODE_BROKER_URL is set; None for the local socket."""
    url = settings.GRIDNODE_BROKER_URL
    if not url:
        return None
    found = _brokers.get(url)
    if found is None:
        with _brokers_lock:
            found = _brokers.setdefault(url, Broker(url))
    return found


@functools.lru_cache(maxsize=16)
def _node(public_key: str) -> str:
    return hashlib.sha256(public_key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class SessionKeys:
    """The Redis keys of one session on one node."""

    prefix: str

    @classmethod
    def of(cls, public_key: str, session_id: str) -> "SessionKeys":
        return cls(f"gridnode:smpc:{_node(public_key)}:{session_id}")

    @property
    def live(self) -> str:
        return self.prefix + ":live"

    @property
    def inbox(self) -> str:
        return self.prefix + ":in"

    def reply(self, message_id: str) -> str:
        return f"{self.prefix}:re:{message_id}"

    def body(self, message_id: str) -> str:
        return f"{self.prefix}:body:{message_id}"


def _milliseconds(seconds: float) -> int:
    return max(1, int((seconds + EXPIRY_MARGIN_SECONDS) * 1000))


def _blocking(seconds: float) -> float:
    """A BLPOP timeout: never 0, which Redis reads as forever."""
    return round(max(0.001, seconds), 3)


# --- the side that sends (channels.deliver, in whichever process took party 0's request) ---------------------


@dataclass(frozen=True)
class Answer:
    """What the evaluation said to one message: its kind (REFUSED, ACCEPTED, ...) and the rest of the value."""

    kind: bytes
    data: bytes


class Outgoing:
    """One message on its way to the evaluation of its session (on whichever replica it runs)."""

    def __init__(self, hub: Broker, keys: SessionKeys, *, timeout: float) -> None:
        self.hub, self.keys, self.timeout = hub, keys, timeout
        self.id = secrets.token_hex(16)
        self._queued: bytes | None = None

    def send(self, label: dict[str, object], body: bytes, *, need_session: bool, wait: float) -> Answer | None:
        """Queue the label (and `body`, inline) and wait up to `wait` s for the first answer (None: none came)."""
        meta = json.dumps({**label, "reply": self.id}).encode()
        message = _LENGTH.pack(len(meta)) + meta + body
        expiry = _milliseconds(self.timeout)
        reply = self.keys.reply(self.id)
        push: list[str | bytes | int | float] = ["EVAL", PUSH_SCRIPT, 3, self.keys.live, self.keys.inbox, reply]
        queued, popped = self.hub.run(
            [
                [*push, message, int(need_session), MAX_QUEUED, expiry],
                ["BLPOP", reply, _blocking(wait)],
            ],
            wait=wait,
        )
        if queued == 1:
            self._queued = message
        return _answer(popped)

    def send_body(self, body: bytes, *, wait: float) -> Answer | None:
        """The body of an accepted message, then its answer (None: none came within `wait` s)."""
        key = self.keys.body(self.id)
        _pushed, _expires, popped = self.hub.run(
            [
                ["RPUSH", key, body],
                ["PEXPIRE", key, _milliseconds(self.timeout)],
                ["BLPOP", self.keys.reply(self.id), _blocking(wait)],
            ],
            wait=wait,
        )
        return _answer(popped)

    def abandon(self) -> None:
        """Tell the evaluation waiting for an accepted message's body that none comes (an empty one)."""
        key = self.keys.body(self.id)
        with contextlib.suppress(BrokerFailed):
            self.hub.run(
                [["RPUSH", key, b""], ["PEXPIRE", key, _milliseconds(self.timeout)]], wait=WRITE_TIMEOUT_SECONDS
            )

    def withdraw(self) -> bool:
        """Take the message back if the evaluation has not taken it yet (whether it was still queued)."""
        if self._queued is None:
            return False
        (removed,) = self.hub.run([["LREM", self.keys.inbox, 1, self._queued]], wait=WRITE_TIMEOUT_SECONDS)
        return removed == 1


def _answer(popped: object) -> Answer | None:
    if popped is None:
        return None
    if not isinstance(popped, list) or len(popped) != 2 or not isinstance(popped[1], bytes) or not popped[1]:
        raise BrokerFailed("This node's broker gave an answer that is not one.")
    value: bytes = popped[1]
    return Answer(value[:1], value[1:])


def split_reply(data: bytes) -> tuple[bytes, dict[str, str]]:
    """A REPLY's (reply, its signature headers)."""
    if len(data) < _LENGTH.size:
        raise BrokerFailed("This node's broker gave an answer that is not one.")
    (size,) = _LENGTH.unpack_from(data)
    headers = json.loads(data[_LENGTH.size : _LENGTH.size + size])
    return data[_LENGTH.size + size :], headers


# --- the evaluating side (channels.SessionMailbox) ------------------------------------------------------------


@dataclass(frozen=True)
class Incoming:
    """A message taken from the inbox: its label and signature, whether its body came along, the body."""

    label: dict[str, object]
    body: bytes
    reply_id: str


class SessionInbox:
    """The evaluation's end: claims the session on this node, takes its messages and answers them."""

    def __init__(self, hub: Broker, keys: SessionKeys, *, lasts: float, timeout: float) -> None:
        self.hub, self.keys, self.timeout = hub, keys, timeout
        self.token = secrets.token_hex(16)
        (claimed,) = hub.run(
            [["SET", keys.live, self.token, "NX", "PX", _milliseconds(lasts)]], wait=WRITE_TIMEOUT_SECONDS
        )
        if claimed is None:
            raise SessionTaken(keys.prefix)

    def take(self, wait: float) -> Incoming | None:
        """The next message, waiting up to `wait` s (None when none came); a malformed one is skipped."""
        (popped,) = self.hub.run([["BLPOP", self.keys.inbox, _blocking(wait)]], wait=wait)
        if popped is None:
            return None
        value = popped[1] if isinstance(popped, list) and len(popped) == 2 else b""
        if not isinstance(value, bytes) or len(value) < _LENGTH.size:
            return Incoming({}, b"", "")
        (size,) = _LENGTH.unpack_from(value)
        try:
            label = json.loads(value[_LENGTH.size : _LENGTH.size + size]) if size <= MAX_LABEL_BYTES else {}
        except ValueError:
            label = {}
        if not isinstance(label, dict):
            label = {}
        reply_id = label.get("reply")
        if not isinstance(reply_id, str) or len(reply_id) != 32 or not all(c in "0123456789abcdef" for c in reply_id):
            reply_id = ""
        return Incoming(label, value[_LENGTH.size + size :], reply_id)

    def answer(self, message: Incoming, kind: bytes, data: bytes = b"") -> None:
        """Give the message's sender an answer (nobody to give it to: dropped)."""
        if not message.reply_id:
            return
        key = self.keys.reply(message.reply_id)
        self.hub.run(
            [["RPUSH", key, kind + data], ["PEXPIRE", key, _milliseconds(self.timeout)]], wait=WRITE_TIMEOUT_SECONDS
        )

    def reply(self, message: Incoming, reply: bytes, headers: bytes) -> None:
        """Answer the message with this round's reply and its signature headers (JSON)."""
        self.answer(message, REPLY, _LENGTH.pack(len(headers)) + headers + reply)

    def take_body(self, message: Incoming, limit: int, wait: float) -> bytes | None:
        """An accepted message's body, once its sender sends it (None when it did not within `wait` s)."""
        key = self.keys.body(message.reply_id)
        (popped,) = self.hub.run([["BLPOP", key, _blocking(wait)]], wait=wait)
        if not isinstance(popped, list) or len(popped) != 2 or not isinstance(popped[1], bytes):
            return None
        return popped[1] if len(popped[1]) <= limit else None

    def close(self) -> None:
        """The session is over here: later messages for it are answered NO_SESSION at once."""
        with contextlib.suppress(BrokerFailed):  # else the keys expire by themselves
            close: list[str | bytes | int | float] = [
                "EVAL",
                CLOSE_SCRIPT,
                2,
                self.keys.live,
                self.keys.inbox,
                self.token,
                self.keys.prefix,
            ]
            self.hub.run([[*close, _milliseconds(self.timeout)]], wait=1.0)
