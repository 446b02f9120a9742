"""Every write and every rule about encrypted-model registrations; the API views and the admin call these.

Worker rows are shared by the registrations that name their address and live as long as one of them
does: deleting a registration, or taking a node out of one in the admin, deletes in the same
transaction the worker rows that no registration uses any more (with their node id and last-seen
time). A node that is registered again later gets a fresh row.

Concurrency: while a registration's nodes change, their rows are locked (`SELECT ... FOR UPDATE`, one
URL at a time in URL order, so two requests never wait on each other in a cycle). A row that one request
is pruning and another is reusing therefore ends up either kept (the pruner sees the new use) or deleted
and then created again; never referenced while deleted. The unique constraints settle the rest: a new
URL named by two requests at once is one row, a model id registered twice at once is one 409.

Nothing here opens a connection to a node's address: registration and search only read and write rows.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Prefetch, QuerySet, prefetch_related_objects

from gridnode.errors import BadRequest, Conflict, NotFound
from gridnode.http import OBJECT_ID_RE
from smpc_app.addresses import normalize_node_url
from smpc_app.models import EncryptedModel, NodeAssignment, WorkerNode

MIN_WORKERS = 2
MAX_NODES_PER_ROLE = 100
MODEL_ID_NOT_FOUND = "Model ID not found!"
REGISTRATION_NOT_FOUND = "Encrypted model not found."

_ORDERED_ASSIGNMENTS = Prefetch(
    "assignments", queryset=NodeAssignment.objects.select_related("node").order_by("role", "position")
)


@dataclass(frozen=True)
class NodeLists:
    """A registration's node addresses in canonical form and in order: its workers and its crypto providers."""

    workers: list[str]
    crypto_provider: list[str]


def node_lists_check(*, workers, crypto_provider) -> NodeLists:
    """Both address lists checked and normalized, or a 400 naming the field at fault.

    Every address is a URL in canonical form (see `smpc_app.addresses`); at least two distinct
    workers; at least one crypto provider; no address twice in a list, nor in both lists.
    """
    worker_urls = _url_list(workers, "workers")
    provider_urls = _url_list(crypto_provider, "crypto_provider")
    if len(worker_urls) < MIN_WORKERS:
        raise BadRequest(f"'workers' needs at least {MIN_WORKERS} distinct worker URLs.")
    if not provider_urls:
        raise BadRequest("'crypto_provider' needs at least one URL.")
    for index, url in enumerate(provider_urls):
        if url in worker_urls:
            raise BadRequest(
                f"'crypto_provider[{index}]' is also in 'workers': "
                "a model's crypto provider cannot be one of its workers."
            )
    return NodeLists(workers=worker_urls, crypto_provider=provider_urls)


def _url_list(value, field: str) -> list[str]:
    """A list of node addresses, each normalized, none twice."""
    if value is None:
        raise BadRequest(f"'{field}' is required: a list of URLs.")
    if not isinstance(value, list):
        raise BadRequest(f"'{field}' must be a list of URLs.")
    if len(value) > MAX_NODES_PER_ROLE:
        raise BadRequest(f"'{field}' lists more than {MAX_NODES_PER_ROLE} nodes.")
    urls: list[str] = []
    for index, item in enumerate(value):
        url = normalize_node_url(item, f"{field}[{index}]")
        if url in urls:
            raise BadRequest(f"'{field}[{index}]' is the same address as an earlier one: list each node once.")
        urls.append(url)
    return urls


def _full_clean(registration: EncryptedModel) -> None:
    """The model's field rules (id, description length) as a 400 naming the field."""
    if _unstorable(registration.description):
        raise BadRequest("'description' must not contain NUL characters or lone surrogates.")
    try:
        registration.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise BadRequest(f"'{field}': {messages[0]}") from None


def _unstorable(text: str) -> bool:
    """Whether text holds characters no column holds: NUL (PostgreSQL refuses it) or lone surrogates."""
    return "\x00" in text or any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def _lock_nodes(urls: Iterable[str]) -> dict[str, WorkerNode]:
    """The row of every address, created where missing, locked until the transaction ends (URL order)."""
    nodes = {}
    for url in sorted(set(urls)):
        # get_or_create retries the read when a concurrent insert of the same URL wins the unique index.
        nodes[url], _ = WorkerNode.objects.select_for_update().get_or_create(url=url)
    return nodes


def _prune_nodes(nodes: Iterable[WorkerNode]) -> None:
    """Delete those of the given (locked) worker rows that no registration uses any more."""
    ids = [node.pk for node in nodes]
    if ids:
        WorkerNode.objects.filter(pk__in=ids, assignments__isnull=True).delete()


def _assign_nodes(registration: EncryptedModel, nodes: NodeLists, *, previous_urls: Iterable[str] = ()) -> None:
    """Make the registration's assignments exactly `nodes`, in order, and prune the rows it let go of."""
    previous_urls = set(previous_urls)
    wanted = {*nodes.workers, *nodes.crypto_provider}
    rows = _lock_nodes(wanted | previous_urls)
    registration.assignments.all().delete()
    NodeAssignment.objects.bulk_create(
        [
            NodeAssignment(registration=registration, node=rows[url], role=role, position=position)
            for role, urls in (
                (NodeAssignment.Role.WORKER, nodes.workers),
                (NodeAssignment.Role.CRYPTO_PROVIDER, nodes.crypto_provider),
            )
            for position, url in enumerate(urls)
        ]
    )
    _prune_nodes(rows[url] for url in previous_urls - wanted)
    # Callers answer with the node lists: load them once, in order, before the transaction ends.
    if hasattr(registration, "_prefetched_objects_cache"):
        registration._prefetched_objects_cache.pop("assignments", None)
    prefetch_related_objects([registration], _ORDERED_ASSIGNMENTS)


def encrypted_model_register(
    *, model_id: str, workers: list[str], crypto_provider: list[str], description: str = ""
) -> EncryptedModel:
    """Register an encrypted model and its nodes; a 400 for bad input, a 409 when the id is taken."""
    nodes = node_lists_check(workers=workers, crypto_provider=crypto_provider)
    registration = EncryptedModel(model_id=model_id, description=description)
    _full_clean(registration)
    try:
        with transaction.atomic():
            registration.save()
            _assign_nodes(registration, nodes)
    except IntegrityError:
        # The unique model_id settles concurrent registrations of one id; anything else is a real fault.
        if EncryptedModel.objects.filter(model_id=model_id).exists():
            raise Conflict(f"Encrypted model with id: {model_id} already exists.") from None
        raise
    return registration


def encrypted_model_update(
    *, registration: EncryptedModel, description: str, workers: list[str], crypto_provider: list[str]
) -> EncryptedModel:
    """Change a registration's description and nodes (the admin's edit) under the rules of registration."""
    nodes = node_lists_check(workers=workers, crypto_provider=crypto_provider)
    registration.description = description
    _full_clean(registration)
    with transaction.atomic():
        registration.save()
        previous_urls = list(registration.nodes.values_list("url", flat=True))
        _assign_nodes(registration, nodes, previous_urls=previous_urls)
    return registration


def encrypted_model_delete(*, model_id: str) -> None:
    """Delete a registration and the worker rows no other registration uses; a 404 when unknown."""
    with transaction.atomic():
        # Locked, so that of two concurrent deletes one answers 404.
        registration = EncryptedModel.objects.select_for_update().filter(model_id=model_id).first()
        if registration is None:
            raise NotFound(REGISTRATION_NOT_FOUND)
        rows = _lock_nodes(registration.nodes.values_list("url", flat=True))
        registration.delete()
        _prune_nodes(rows.values())


def encrypted_models() -> QuerySet[EncryptedModel]:
    """Every registration, oldest first, with its nodes loaded in order and this node's share (if any) joined."""
    return EncryptedModel.objects.select_related("share").prefetch_related(_ORDERED_ASSIGNMENTS)


def encrypted_model_get(*, model_id: str) -> EncryptedModel:
    """A registration with its nodes loaded in order, or a 404."""
    try:
        return encrypted_models().get(model_id=model_id)
    except EncryptedModel.DoesNotExist:
        raise NotFound(REGISTRATION_NOT_FOUND) from None


def encrypted_model_nodes(*, model_id: str) -> NodeLists:
    """The worker and crypto-provider URLs of a registration, in order (POST /search-encrypted-models)."""
    if not OBJECT_ID_RE.fullmatch(model_id):
        # Never registered (registration checks the id rules); and PostgreSQL refuses a NUL in a query.
        raise NotFound(MODEL_ID_NOT_FOUND)
    try:
        registration = encrypted_model_get(model_id=model_id)
    except NotFound:
        raise NotFound(MODEL_ID_NOT_FOUND) from None
    return NodeLists(workers=registration.worker_urls, crypto_provider=registration.crypto_provider_urls)


def registration_nodes(registration_id: int) -> NodeLists:
    """The worker and crypto-provider URLs of the registration with this primary key, in order; one query.

    Read on every encrypted inference: plain SQL, where the ORM's prefetch took two queries and more time
    building them than running them. The same order as `EncryptedModel.node_urls`: by position within a role.
    """
    with connection.cursor() as cursor:
        cursor.execute(_REGISTRATION_NODES, [registration_id])
        rows = cursor.fetchall()
    return NodeLists(
        workers=[url for role, url in rows if role == NodeAssignment.Role.WORKER],
        crypto_provider=[url for role, url in rows if role == NodeAssignment.Role.CRYPTO_PROVIDER],
    )


_REGISTRATION_NODES = (
    f"SELECT a.role, n.url FROM {NodeAssignment._meta.db_table} a JOIN {WorkerNode._meta.db_table} n "
    "ON a.node_id = n.id WHERE a.registration_id = %s ORDER BY a.role, a.position"
)
