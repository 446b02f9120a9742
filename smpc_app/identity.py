"""This node's own Ed25519 key pair, which names it to the other nodes of an encrypted model.

The private key is made once, on first use or by `manage.py smpc_identity`, and kept in
`GRIDNODE_DATA_DIR/smpc/node_key` (mode 0600, raw 32 bytes). Other nodes trust this node by its public
key (`manage.py smpc_trust add URL KEY` on each of them); a node's key signs only its own messages, so
a leaked key lets its holder act as that one node, never as another.

Public keys are written as 43 characters of unpadded standard base64 (the 32 raw bytes): never with a
leading "-", which a command line would take for an option.
"""

import base64
import binascii
import functools
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_FILE = Path("smpc") / "node_key"
PUBLIC_KEY_RE = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]")
PUBLIC_KEY_RULE = "43 characters of base64 (an Ed25519 public key, as manage.py smpc_identity prints it)"
_PRIVATE_KEY_BYTES = 32


def key_path(data_dir: Path | None = None) -> Path:
    """Where a node's private key lives: under its data folder (GRIDNODE_DATA_DIR)."""
    if data_dir is None:
        from django.conf import settings

        data_dir = settings.DATA_DIR
    return Path(data_dir) / KEY_FILE


def encode_public_key(raw: bytes) -> str:
    """A public key's text form."""
    return base64.b64encode(raw).rstrip(b"=").decode("ascii")


def decode_public_key(text: str) -> bytes | None:
    """The 32 bytes of a public key's text form, or None when it is not one."""
    if not isinstance(text, str) or not PUBLIC_KEY_RE.fullmatch(text):
        return None
    try:
        return base64.b64decode(text + "=", validate=True)
    except (binascii.Error, ValueError):
        return None


def is_public_key(text: str) -> bool:
    """Whether `text` is a public key's text form."""
    return decode_public_key(text) is not None


class NodeIdentity:
    """A node's key pair: signs its messages; `public_key` is what other nodes trust."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = encode_public_key(raw)

    def sign(self, message: bytes) -> str:
        """The signature of `message`, in URL-safe base64 (86 characters)."""
        return base64.urlsafe_b64encode(self._private_key.sign(message)).rstrip(b"=").decode("ascii")


def load_or_create(path: Path) -> tuple[NodeIdentity, bool]:
    """The identity kept at `path`, made there first if there is none: (identity, whether it was made now).

    Processes of one node that start together race to make it: the file is written under a temporary
    name and linked into place, so exactly one key wins and every process reads that one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    created = False
    if not path.exists():
        staging = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(os.urandom(_PRIVATE_KEY_BYTES))
            try:
                os.link(staging, path)
                created = True
            except FileExistsError:
                pass  # another process made it first: use theirs
        finally:
            staging.unlink(missing_ok=True)
    raw = path.read_bytes()
    if len(raw) != _PRIVATE_KEY_BYTES:
        raise RuntimeError(f"{path} is not a node key (32 bytes); move it away and run manage.py smpc_identity")
    return NodeIdentity(Ed25519PrivateKey.from_private_bytes(raw)), created


@functools.cache
def _identity_at(path: str) -> NodeIdentity:
    return load_or_create(Path(path))[0]


_last: tuple[object, NodeIdentity] | None = None


def node_identity() -> NodeIdentity:
    """This node's identity (made on first use), cached per process and data folder.

    Asked for several times per exchange round: the last answer is kept with the data folder it is for.
    """
    global _last
    from django.conf import settings

    data_dir = settings.DATA_DIR
    last = _last
    if last is not None and last[0] is data_dir:
        return last[1]
    identity = _identity_at(str(key_path(data_dir)))
    _last = (data_dir, identity)
    return identity


@functools.lru_cache(maxsize=256)
def _public_key_object(text: str) -> Ed25519PublicKey | None:
    raw = decode_public_key(text)
    return None if raw is None else Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(public_key: str, signature: str, message: bytes) -> bool:
    """Whether `signature` (URL-safe base64) is `public_key`'s over `message`."""
    key = _public_key_object(public_key)
    if key is None or not isinstance(signature, str) or len(signature) != 86 or not signature.isascii():
        return False
    try:
        raw = base64.urlsafe_b64decode(signature + "==")
        key.verify(raw, message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
