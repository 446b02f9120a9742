"""Addresses and a database read-back shared by the encrypted-model tests."""

from smpc_app.models import NodeAssignment

ALICE = "http://alice.example:5000"
BOB = "http://bob.example:5000"
CAROL = "http://carol.example:5000"
CRYPTO = "http://crypto.example:5000"


def stored_nodes(model_id: str) -> dict[str, list[str]]:
    """The node URLs the database holds for a registration, by role, in position order."""
    rows = NodeAssignment.objects.filter(registration__model_id=model_id).order_by("position")
    nodes: dict[str, list[str]] = {"workers": [], "crypto_provider": []}
    for role, url in rows.values_list("role", "node__url"):
        nodes["workers" if role == NodeAssignment.Role.WORKER else "crypto_provider"].append(url)
    return nodes
