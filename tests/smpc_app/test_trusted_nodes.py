"""A node's identity and the nodes it trusts: `manage.py smpc_identity`, `manage.py smpc_trust`, the admin's
Trusted nodes, and the shared secret of earlier versions refused at start-up."""

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from smpc_app.identity import encode_public_key, is_public_key, node_identity
from smpc_app.models import TrustedNode
from tests.smpc_app.helpers import BOB

pytestmark = pytest.mark.django_db

TRUSTED = "/admin/smpc_app/trustednode/"
REPO = Path(__file__).resolve().parents[2]


def run(*arguments: str) -> str:
    out = io.StringIO()
    call_command(*arguments, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_smpc_identity_makes_the_key_pair_once_and_prints_its_public_key(node_folder):
    first = run("smpc_identity").strip()
    second = run("smpc_identity").strip()

    assert is_public_key(first)
    assert first == second == node_identity().public_key
    key_file = node_folder / "smpc" / "node_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32


def test_smpc_trust_adds_lists_and_removes_a_node(peers):
    bob = peers["bob"]

    added = run("smpc_trust", "add", "HTTP://Bob.Example:5000/", bob.public_key, "--label", "bob")
    listed = run("smpc_trust", "list")

    assert BOB in added
    assert listed.strip() == f"{BOB} {bob.public_key} bob"
    node = TrustedNode.objects.get()
    assert (node.url, node.public_key, node.label) == (BOB, bob.public_key, "bob")
    run("smpc_trust", "remove", BOB)
    assert not TrustedNode.objects.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("add", "ftp://bob.example", "KEY"), "'url' must be an absolute http or https URL"),
        (("add", BOB, "not-a-key"), "'public_key' must be 43 characters of base64"),
        (("remove", BOB), "This node trusts no node at that address."),
    ],
)
def test_smpc_trust_says_what_is_wrong(arguments, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        run("smpc_trust", *arguments)

    assert not TrustedNode.objects.exists()


def test_a_node_never_trusts_its_own_key_and_each_address_or_key_is_trusted_once(peers):
    bob = peers["bob"]
    run("smpc_trust", "add", BOB, bob.public_key)

    with pytest.raises(CommandError, match="this node's own key"):
        run("smpc_trust", "add", "http://me.example", node_identity().public_key)
    with pytest.raises(CommandError, match="already trusts"):
        run("smpc_trust", "add", BOB, peers["carol"].public_key)
    with pytest.raises(CommandError, match="already trusts"):
        run("smpc_trust", "add", "http://bob-again.example", bob.public_key)

    assert list(TrustedNode.objects.values_list("url", flat=True)) == [BOB]


def test_the_admin_adds_a_trusted_node_in_canonical_form_and_shows_this_nodes_key(admin_client, peers):
    bob = peers["bob"]

    response = admin_client.post(
        f"{TRUSTED}add/", {"url": "http://BOB.example:5000/", "public_key": bob.public_key, "label": "bob"}
    )
    listing = admin_client.get(TRUSTED).content.decode()

    assert response.status_code == 302
    node = TrustedNode.objects.get()
    assert (node.url, node.public_key) == (BOB, bob.public_key)
    assert node_identity().public_key in listing


def test_the_admin_refuses_this_nodes_own_key_and_a_bad_key(admin_client):
    own = admin_client.post(f"{TRUSTED}add/", {"url": BOB, "public_key": node_identity().public_key})
    bad = admin_client.post(f"{TRUSTED}add/", {"url": BOB, "public_key": "x" * 43})

    assert own.status_code == bad.status_code == 200  # the form again, with its errors
    assert "own key" in own.content.decode()
    assert "A public key is" in bad.content.decode()
    assert not TrustedNode.objects.exists()


def test_a_node_with_the_old_shared_secret_refuses_to_start(tmp_path):
    environment = {**os.environ, "GRIDNODE_SMPC_SECRET": "s" * 40, "GRIDNODE_DATA_DIR": str(tmp_path)}
    environment.pop("DATABASE_URL", None)

    started = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=environment, capture_output=True, text=True
    )

    assert started.returncode != 0
    assert "GRIDNODE_SMPC_SECRET is no longer used" in started.stderr


@pytest.mark.parametrize("first_byte", [0x00, 0xF8, 0xFC])
def test_every_key_smpc_identity_can_print_is_taken_on_the_command_line(first_byte):
    """Keys are standard base64, so none starts with the "-" a command line takes for an option."""
    key = encode_public_key(bytes([first_byte]) + bytes(range(31)))

    run("smpc_trust", "add", BOB, key)

    assert TrustedNode.objects.get().public_key == key
