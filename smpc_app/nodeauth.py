"""Requests between the nodes of one encrypted model, signed with the secret they share.

Worker-to-worker messages and the provider's randomness are for nodes only, never for clients: a
client holding both workers' randomness could unmask the weights. Each such request carries an
HMAC-SHA256 over its method, path, a timestamp and the body's digest, keyed by GRIDNODE_SMPC_SECRET.
Requests older than `MAX_CLOCK_SKEW` seconds are refused; within that window a replay is caught by the
protocol itself (each exchange round and each party's randomness is accepted once).

Any holder of the secret can speak for any node of the deployment, so it must never reach clients.
"""

import hashlib
import hmac
import time

from django.conf import settings

from gridnode.errors import GridError, ServiceUnavailable

SIGNATURE_HEADER = "X-Gridnode-Signature"
TIMESTAMP_HEADER = "X-Gridnode-Timestamp"
MAX_CLOCK_SKEW = 300
_KEY_PURPOSE = b"gridnode smpc node authentication v1\x00"


class NodeAuthenticationFailed(GridError):
    """A request that should come from a peer node carries no valid signature."""

    status = 401


def _key() -> bytes:
    """The signing key, or a 503 when this node has no SMPC secret."""
    if not settings.GRIDNODE_SMPC_SECRET:
        raise ServiceUnavailable(
            "This node takes no part in encrypted inference: its operator has not set GRIDNODE_SMPC_SECRET."
        )
    return hashlib.sha256(_KEY_PURPOSE + settings.GRIDNODE_SMPC_SECRET.encode()).digest()


def _signature(key: bytes, method: str, path: str, timestamp: str, body: bytes) -> str:
    message = b"\n".join([method.upper().encode(), path.encode(), timestamp.encode(), hashlib.sha256(body).digest()])
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signed_headers(method: str, path: str, body: bytes) -> dict[str, str]:
    """The headers that let a peer node accept this request."""
    timestamp = str(int(time.time()))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: _signature(_key(), method, path, timestamp, body)}


def verify_request(request, body: bytes) -> None:
    """Nothing when a Django request is signed by a node holding our secret; otherwise a 401 (or 503)."""
    verify(
        method=request.method,
        path=request.path,
        timestamp=request.headers.get(TIMESTAMP_HEADER, ""),
        signature=request.headers.get(SIGNATURE_HEADER, ""),
        body=body,
    )


def verify(*, method: str, path: str, timestamp: str, signature: str, body: bytes) -> None:
    """Nothing when the signature is a peer node's over this request; otherwise a 401 (or 503)."""
    key = _key()
    if not timestamp or not signature:
        raise NodeAuthenticationFailed("This endpoint is for the nodes of an encrypted model: the request is unsigned.")
    if not timestamp.isascii() or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_CLOCK_SKEW:
        raise NodeAuthenticationFailed("The request's signature timestamp is missing, malformed or too old.")
    expected = _signature(key, method, path, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise NodeAuthenticationFailed("The request's node signature does not match.")
