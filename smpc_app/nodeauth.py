"""Signed messages between the nodes of an encrypted model, and their signed replies.

Every node-to-node request carries an `X-Gridnode-Message` header naming what it is (its purpose, the
sender's and the recipient's public keys, the model, the session, the party, the round, a timestamp,
the body's length and SHA-256), and `X-Gridnode-Signature`, the sender's Ed25519 signature over that
header. So the recipient judges a request from its headers alone, before it reads the body or does any
work: it must be addressed to this node's key, fresh (`MAX_CLOCK_SKEW`), signed by the key it names,
and its Content-Length the one signed. Whether that key may send it (a trusted node, registered in that
role of that model) and whether the message was seen before are the endpoints' checks (`smpc_app.runtime`,
`smpc_app.channels`): each message is accepted once, because each (session, party, round) is.

Replies are signed by the recipient over the request's signature, the status and the reply's digest,
and the caller checks them against the key it expects, so an answer is bound to the one request.

Within one exchange session, Ed25519 signs only the first round: party 0's first message carries a fresh
X25519 public key, party 1's signed answer carries its own, and both derive a key for that session alone.
Later rounds and their answers carry an HMAC-SHA256 under it (`hmac-...` in the signature headers), a
few microseconds instead of an Ed25519 verification each way; nobody else can derive the key (not even
with a node's leaked long-term key, the exchange keys are thrown away), and it names its session.
"""

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gridnode.errors import BadRequest, GridError, PayloadTooLarge
from gridnode.http import OBJECT_ID_RE
from smpc_app.identity import NodeIdentity, is_public_key, node_identity, verify_signature

MESSAGE_HEADER = "X-Gridnode-Message"
SIGNATURE_HEADER = "X-Gridnode-Signature"
REPLY_HEADER = "X-Gridnode-Reply"
REPLY_SIGNATURE_HEADER = "X-Gridnode-Reply-Signature"
MAX_CLOCK_SKEW = 300
RANDOMNESS = "randomness"
EXCHANGE = "exchange"
# A randomness request is a few hundred bytes of meta; nothing larger is read.
MAX_RANDOMNESS_REQUEST_BYTES = 64 * 1024
MAX_ROUND = 100_000
_VERSION = "v1"
_REQUEST_PURPOSE = b"gridnode smpc request v1\n"
_REPLY_PURPOSE = b"gridnode smpc reply v1\n"
_SESSION_PURPOSE = b"gridnode smpc session key v1\n"
MAC_PREFIX = "hmac-"
_FIELDS = 11


class NodeAuthenticationFailed(GridError):
    """A request that should come from a peer node is not signed for this node by the key it names."""

    status = 401


@dataclass(frozen=True)
class MessageLabel:
    """What a signed request says it is; its text is what the sender signs."""

    purpose: str
    sender: str
    recipient: str
    model_id: str
    session_id: str
    party: int
    round: int
    timestamp: int
    length: int
    body_sha256: str

    def text(self) -> str:
        """The header's value."""
        return " ".join(
            [
                _VERSION,
                self.purpose,
                self.sender,
                self.recipient,
                self.model_id,
                self.session_id,
                str(self.party),
                str(self.round),
                str(self.timestamp),
                str(self.length),
                self.body_sha256,
            ]
        )


def request_label(
    *,
    purpose: str,
    sender: str,
    recipient: str,
    model_id: str,
    session_id: str,
    party: int,
    round_number: int,
    body: bytes,
    timestamp: int | None = None,
) -> MessageLabel:
    """The label of a request about to be sent (now, unless `timestamp` says otherwise)."""
    return MessageLabel(
        purpose=purpose,
        sender=sender,
        recipient=recipient,
        model_id=model_id,
        session_id=session_id,
        party=party,
        round=round_number,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        length=len(body),
        body_sha256=hashlib.sha256(body).hexdigest(),
    )


def sign_request(
    *,
    purpose: str,
    recipient: str,
    model_id: str,
    session_id: str,
    party: int,
    round_number: int,
    body: bytes,
    identity: NodeIdentity | None = None,
    timestamp: int | None = None,
) -> tuple[dict[str, str], str]:
    """The headers that let `recipient` (a public key) accept this body, and the signature in them.

    Signed by this node unless another `identity` is given (tests play other nodes with it).
    """
    identity = identity or node_identity()
    text = request_label(
        purpose=purpose,
        sender=identity.public_key,
        recipient=recipient,
        model_id=model_id,
        session_id=session_id,
        party=party,
        round_number=round_number,
        body=body,
        timestamp=timestamp,
    ).text()
    signature = identity.sign(signed_text(text))
    return {MESSAGE_HEADER: text, SIGNATURE_HEADER: signature}, signature


def signed_text(header: str) -> bytes:
    """What a request's signature covers: its message header, under this protocol's purpose string."""
    return _REQUEST_PURPOSE + header.encode()


def _number(text: str, limit: int) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return None
    value = int(text)
    return value if value <= limit else None


def parse_label(text: str) -> MessageLabel | None:
    """The label a header names, or None when it is not one."""
    fields = text.split(" ")
    if len(fields) != _FIELDS or fields[0] != _VERSION:
        return None
    _version, purpose, sender, recipient, model_id, session_id, party, round_text, timestamp, length, digest = fields
    party_number, round_number = _number(party, 1), _number(round_text, MAX_ROUND)
    seconds, size = _number(timestamp, 2**40), _number(length, 2**48)
    if (
        party_number is None
        or round_number is None
        or seconds is None
        or size is None
        or purpose not in (RANDOMNESS, EXCHANGE)
        or not is_public_key(sender)
        or not is_public_key(recipient)
        or not OBJECT_ID_RE.fullmatch(model_id)
        or len(session_id) != 32
        or not all(char in "0123456789abcdef" for char in session_id)
        or len(digest) != 64
        or not all(char in "0123456789abcdef" for char in digest)
    ):
        return None
    return MessageLabel(
        purpose, sender, recipient, model_id, session_id, party_number, round_number, seconds, size, digest
    )


def check_request(*, purpose: str, header: str, signature: str, content_length: int | None, limit: int) -> MessageLabel:
    """The label of a request signed for this node, judged from its headers alone; a 401/400/413 otherwise.

    `limit` bounds the body: a larger signed length is a 413 before anything is read.
    """
    if not header or not signature:
        raise NodeAuthenticationFailed("This endpoint is for the nodes of an encrypted model: the request is unsigned.")
    label = parse_label(header) if isinstance(header, str) and len(header) < 512 else None
    if label is None or label.purpose != purpose:
        raise NodeAuthenticationFailed(f"The request's {MESSAGE_HEADER} header is not a node's {purpose} message.")
    if label.recipient != node_identity().public_key:
        raise NodeAuthenticationFailed("The request is signed for another node.")
    if abs(time.time() - label.timestamp) > MAX_CLOCK_SKEW:
        raise NodeAuthenticationFailed("The request's signature is too old (or its sender's clock is off).")
    if signature.startswith(MAC_PREFIX):
        # Checked by the session's evaluation, the only holder of the session key (smpc_app.channels).
        if label.purpose != EXCHANGE or label.round == 0:
            raise NodeAuthenticationFailed("Only a session's later rounds are signed with its session key.")
    elif not verify_signature(label.sender, signature, signed_text(header)):
        raise NodeAuthenticationFailed("The request's node signature does not match.")
    if content_length != label.length:
        raise BadRequest("The request's Content-Length is not the length its sender signed.")
    if label.length > limit:
        raise PayloadTooLarge(f"The message is larger than this node accepts ({limit} bytes).")
    return label


def check_body(label: MessageLabel, body: bytes) -> None:
    """A 400 unless the body read is the one signed."""
    if len(body) != label.length or hashlib.sha256(body).hexdigest() != label.body_sha256:
        raise BadRequest("The request's body is not the one its sender signed.")


def _reply_message(request_signature: str, status: int, sender: str, digest: str) -> bytes:
    return _REPLY_PURPOSE + f"{request_signature}\n{status}\n{sender}\n{digest}".encode()


def sign_reply(
    *, request_signature: str, status: int, body: bytes, identity: NodeIdentity | None = None
) -> dict[str, str]:
    """The headers binding this node's reply (status and body) to the request it answers."""
    identity = identity or node_identity()
    digest = hashlib.sha256(body).hexdigest()
    signature = identity.sign(_reply_message(request_signature, status, identity.public_key, digest))
    return {REPLY_HEADER: f"{identity.public_key} {digest}", REPLY_SIGNATURE_HEADER: signature}


def reply_is_signed(*, sender: str, request_signature: str, status: int, header: str, signature: str, body: bytes):
    """Whether a reply carries `sender`'s signature over its status and body, for this request."""
    if not header or not signature:
        return False
    named, _, digest = header.partition(" ")
    if named != sender or digest != hashlib.sha256(body).hexdigest():
        return False
    return verify_signature(sender, signature, _reply_message(request_signature, status, sender, digest))


def new_exchange_key() -> tuple[X25519PrivateKey, str]:
    """A fresh X25519 key pair for one session: (private key, public key as URL-safe base64)."""
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, base64.urlsafe_b64encode(public).decode("ascii")


def session_key(
    private: X25519PrivateKey, peer_public, *, sender: str, recipient: str, model_id: str, session_id: str
) -> bytes | None:
    """The key of one exchange session, from our exchange key and the peer's (None when that is no key).

    Bound to the session, the model and both nodes' long-term keys (party 0 is the `sender`).
    """
    try:
        raw = base64.urlsafe_b64decode(peer_public) if isinstance(peer_public, str) and len(peer_public) == 44 else b""
        shared = private.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        return None
    context = f"{sender} {recipient} {model_id} {session_id}".encode()
    return hmac.new(_SESSION_PURPOSE + context, shared, hashlib.sha256).digest()


def session_mac(key: bytes, header: str) -> str:
    """A later round's signature: the session key's HMAC over its message header."""
    return MAC_PREFIX + hmac.new(key, signed_text(header), hashlib.sha256).hexdigest()


def session_mac_matches(key: bytes, header: str, signature: str) -> bool:
    """Whether `signature` is the session key's over `header`."""
    return hmac.compare_digest(session_mac(key, header).encode(), signature.encode("utf-8", "replace"))


def session_reply_headers(key: bytes, *, sender: str, request_signature: str, status: int, body: bytes):
    """The reply headers of a later round: its digest and the session key's HMAC binding it to the request."""
    digest = hashlib.sha256(body).hexdigest()
    mac = hmac.new(key, _reply_message(request_signature, status, sender, digest), hashlib.sha256).hexdigest()
    return {REPLY_HEADER: f"{sender} {digest}", REPLY_SIGNATURE_HEADER: MAC_PREFIX + mac}


def session_reply_matches(
    key: bytes, *, sender: str, request_signature: str, status: int, header: str, signature: str, body: bytes
):
    """Whether a later round's reply carries the session key's HMAC for this request, status and body."""
    expected = session_reply_headers(key, sender=sender, request_signature=request_signature, status=status, body=body)
    return hmac.compare_digest(expected[REPLY_HEADER].encode(), (header or "").encode("utf-8", "replace")) and (
        hmac.compare_digest(expected[REPLY_SIGNATURE_HEADER].encode(), (signature or "").encode("utf-8", "replace"))
    )
