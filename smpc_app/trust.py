"""Which nodes this node trusts with encrypted models: adding, removing and looking up their keys.

The operator's list (admin, `manage.py smpc_trust`); the API never writes it. A registration may name any
address (it is a directory clients search), but this node runs a model, calls a node or answers one only
when the node is on this list, under the key that signs its messages.
"""

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from gridnode.errors import BadRequest, Conflict, NotFound
from smpc_app.addresses import normalize_node_url
from smpc_app.identity import PUBLIC_KEY_RULE, is_public_key, node_identity
from smpc_app.models import NodeAssignment, TrustedNode

TRUSTED_NODE_NOT_FOUND = "This node trusts no node at that address."


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


def trusted_keys(urls) -> dict[str, str]:
    """The public key of each of `urls` this node trusts (untrusted ones are left out); one query."""
    return dict(TrustedNode.objects.filter(url__in=list(urls)).values_list("url", "public_key"))


def is_registered_as(*, public_key: str, model_id: str, role: str, position: int, our_party: int | None = None) -> bool:
    """Whether `public_key` is the trusted key of the node a registration names at (role, position), and,
    with `our_party`, whether this node holds that party's worker share of the model; one query."""
    assignments = NodeAssignment.objects.filter(registration__model_id=model_id, role=role, position=position)
    if our_party is not None:
        assignments = assignments.filter(
            registration__share__role=NodeAssignment.Role.WORKER, registration__share__party=our_party
        )
    return TrustedNode.objects.filter(public_key=public_key, url__in=assignments.values("node__url")).exists()
