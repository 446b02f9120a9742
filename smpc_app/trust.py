"""Which nodes this node trusts with encrypted models: adding, removing and looking up their keys.

The operator's list (admin, `manage.py smpc_trust`); the API never writes it. A registration may name any
address (it is a directory clients search), but this node runs a model, calls a node or answers one only
when the node is on this list, under the key that signs its messages.

Every encrypted inference looks the list up several times, so each process keeps a copy: reloaded when
a lookup misses (a node just trusted is found at once), after any change made in this process, and
otherwise at least every TRUST_CACHE_SECONDS (a node removed in another process is trusted there for at
most that long).
"""

import threading
import time

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from gridnode.errors import BadRequest, Conflict, NotFound
from smpc_app.addresses import normalize_node_url
from smpc_app.identity import PUBLIC_KEY_RULE, is_public_key, node_identity
from smpc_app.models import EncryptedModel, ModelShare, NodeAssignment, TrustedNode, WorkerNode

TRUSTED_NODE_NOT_FOUND = "This node trusts no node at that address."
TRUST_CACHE_SECONDS = 5


class _TrustList:
    """This process's copy of the trusted nodes: {url: public key} and {public key: url}."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}
        self._urls: dict[str, str] = {}
        self._loaded_at: float | None = None

    def clear(self) -> None:
        """Forget the copy: the next lookup reads the database."""
        with self._lock:
            self._loaded_at = None

    def _load(self) -> None:
        rows = list(TrustedNode.objects.values_list("url", "public_key"))
        with self._lock:
            self._keys = dict(rows)
            self._urls = {key: url for url, key in rows}
            self._loaded_at = time.monotonic()

    def _fresh(self) -> bool:
        loaded = self._loaded_at
        return loaded is not None and time.monotonic() - loaded < TRUST_CACHE_SECONDS

    def keys(self, urls: list[str], *, rarely_trusted: tuple[str, ...] = ()) -> dict[str, str]:
        """The key of each trusted address among `urls`; one in `rarely_trusted` that is missing from the
        copy is no reason to reload it (it is usually missing from the list itself)."""
        if not self._fresh() or any(url not in self._keys and url not in rarely_trusted for url in urls):
            self._load()
        keys = self._keys
        return {url: keys[url] for url in urls if url in keys}

    def url(self, public_key: str) -> str | None:
        """The address trusted under `public_key`, or None."""
        if not self._fresh() or public_key not in self._urls:
            self._load()
        return self._urls.get(public_key)


trust_list = _TrustList()


def trusted_node_add(*, url: str, public_key: str, label: str = "") -> TrustedNode:
    """Trust the node at `url` under `public_key`; a 400 for bad input, a 409 when either is trusted already."""
    url = normalize_node_url(url, "url")
    public_key = public_key.strip() if isinstance(public_key, str) else public_key
    if not is_public_key(public_key):
        raise BadRequest(f"'public_key' must be {PUBLIC_KEY_RULE}.")
    if public_key == node_identity().public_key:
        raise BadRequest("'public_key' is this node's own key: a node never trusts itself as another node.")
    node = TrustedNode(url=url, public_key=public_key, label=label or "")
    try:
        node.full_clean(validate_unique=False)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise BadRequest(f"'{field}': {messages[0]}") from None
    try:
        with transaction.atomic():
            node.save()
    except IntegrityError:
        raise Conflict("This node already trusts that address or that key: remove the old entry first.") from None
    return node


def trusted_node_remove(*, url: str) -> None:
    """Stop trusting the node at `url`; a 404 when it was not trusted."""
    deleted, _ = TrustedNode.objects.filter(url=normalize_node_url(url, "url")).delete()
    if not deleted:
        raise NotFound(TRUSTED_NODE_NOT_FOUND)


def trusted_keys(urls, *, rarely_trusted: tuple[str, ...] = ()) -> dict[str, str]:
    """The public key of each of `urls` this node trusts (untrusted ones are left out).

    An address in `rarely_trusted` (this node's own, say) is looked up in this process's copy as it is:
    without that, its absence would reload the list from the database on every call.
    """
    return trust_list.keys(list(urls), rarely_trusted=rarely_trusted)


def is_registered_as(*, public_key: str, model_id: str, role: str, position: int, our_party: int | None = None) -> bool:
    """Whether `public_key` is the trusted key of the node a registration names at (role, position), and,
    with `our_party`, whether this node holds that party's worker share of the model; one query.

    Asked on every randomness request and every session's first exchange: plain SQL, as building the
    query with the ORM cost four times what running it did (0.8 ms against 0.2).
    """
    url = trust_list.url(public_key)
    if url is None:
        return False
    statement = _REGISTERED_AS
    params: list[str | int] = [model_id, role, position, url]
    if our_party is not None:
        statement = _REGISTERED_AS_WITH_SHARE
        params += [NodeAssignment.Role.WORKER, our_party]
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchone() is not None


_REGISTERED_AS = (
    f"SELECT 1 FROM {NodeAssignment._meta.db_table} a "
    f"JOIN {EncryptedModel._meta.db_table} r ON a.registration_id = r.id "
    f"JOIN {WorkerNode._meta.db_table} n ON a.node_id = n.id "
    "WHERE r.model_id = %s AND a.role = %s AND a.position = %s AND n.url = %s"
)
_REGISTERED_AS_WITH_SHARE = (
    f"{_REGISTERED_AS} AND EXISTS (SELECT 1 FROM {ModelShare._meta.db_table} s "
    "WHERE s.registration_id = r.id AND s.role = %s AND s.party = %s)"
)
