"""The admin: registrations with their nodes inline, edited under the API's rules; worker nodes and their users."""

import pytest

from smpc_app.models import EncryptedModel, NodeAssignment, WorkerNode
from tests.smpc_app.helpers import ALICE, BOB, CAROL, CRYPTO, stored_nodes

pytestmark = pytest.mark.django_db

REGISTRATIONS = "/admin/smpc_app/encryptedmodel/"
NODES = "/admin/smpc_app/workernode/"


def inline_rows(rows: list[dict], *, initial: int = 0) -> dict:
    """The POST data of the nodes inline: one dict per row (url, role, position, and id/DELETE for saved rows)."""
    data = {
        "assignments-TOTAL_FORMS": str(len(rows)),
        "assignments-INITIAL_FORMS": str(initial),
        "assignments-MIN_NUM_FORMS": "0",
        "assignments-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        for key, value in row.items():
            data[f"assignments-{index}-{key}"] = value
    return data


def saved_rows(model_id: str) -> list[dict]:
    """The inline rows of a saved registration, as the change page sends them back unchanged."""
    registration = EncryptedModel.objects.get(model_id=model_id)
    return [
        {
            "id": str(assignment.pk),
            "registration": str(registration.pk),
            "url": assignment.node.url,
            "role": assignment.role,
            "position": str(assignment.position),
        }
        for assignment in NodeAssignment.objects.filter(registration=registration).order_by("-role", "position")
    ]


def change_url(model_id: str) -> str:
    return f"{REGISTRATIONS}{EncryptedModel.objects.get(model_id=model_id).pk}/change/"


def test_the_list_shows_registrations_with_their_nodes(admin_client, register):
    register("alpha", workers=[ALICE, BOB], crypto_provider=[CRYPTO])
    register("beta", workers=[CAROL, ALICE], crypto_provider=[BOB])

    response = admin_client.get(REGISTRATIONS)

    assert response.status_code == 200
    page = response.content.decode()
    assert "alpha" in page
    assert "beta" in page
    assert f"{CAROL}, {ALICE}" in page


def test_search_finds_a_registration_by_a_node_address(admin_client, register):
    register("alpha", workers=[ALICE, BOB])
    register("beta", workers=[CAROL, "http://dave.example"])

    found = admin_client.get(REGISTRATIONS, {"q": "carol"}).context["cl"].result_list

    assert [registration.model_id for registration in found] == ["beta"]


def test_the_add_page_offers_rows_for_two_workers_and_a_provider(admin_client):
    response = admin_client.get(f"{REGISTRATIONS}add/")
    assert response.status_code == 200
    assert response.context["inline_admin_formsets"][0].formset.total_form_count() == 3


def test_adding_a_registration_with_its_nodes(admin_client):
    data = {
        "model_id": "from-admin",
        "description": "typed in",
        **inline_rows(
            [
                {"url": "HTTP://Bob.example:5000/", "role": "worker", "position": "2"},
                {"url": CRYPTO, "role": "crypto_provider", "position": ""},
                {"url": ALICE, "role": "worker", "position": "1"},
            ]
        ),
    }

    response = admin_client.post(f"{REGISTRATIONS}add/", data)

    assert response.status_code == 302, response.context and response.context["errors"]
    registration = EncryptedModel.objects.get()
    assert (registration.model_id, registration.description) == ("from-admin", "typed in")
    assert stored_nodes("from-admin") == {"workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}
    rows = NodeAssignment.objects.filter(registration=registration).order_by("-role", "position")
    assert list(rows.values_list("role", "position")) == [("worker", 0), ("worker", 1), ("crypto_provider", 0)]


def test_adding_reuses_the_worker_rows_the_api_made(admin_client, register):
    register("from-api", workers=[ALICE, BOB], crypto_provider=[CRYPTO])
    alice = WorkerNode.objects.get(url=ALICE)
    data = {
        "model_id": "from-admin",
        **inline_rows(
            [
                {"url": ALICE, "role": "worker", "position": "0"},
                {"url": CAROL, "role": "worker", "position": "1"},
                {"url": BOB, "role": "crypto_provider", "position": "0"},
            ]
        ),
    }

    assert admin_client.post(f"{REGISTRATIONS}add/", data).status_code == 302

    assert WorkerNode.objects.count() == 4
    assert sorted(WorkerNode.objects.get(pk=alice.pk).encrypted_models.values_list("model_id", flat=True)) == [
        "from-admin",
        "from-api",
    ]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"url": ALICE, "role": "worker"}, {"url": CRYPTO, "role": "crypto_provider"}],
            "&#x27;workers&#x27; needs at least 2 distinct worker URLs.",
        ),
        (
            [{"url": ALICE, "role": "worker"}, {"url": BOB, "role": "worker"}],
            "&#x27;crypto_provider&#x27; needs at least one URL.",
        ),
        (
            [
                {"url": ALICE, "role": "worker"},
                {"url": BOB, "role": "worker"},
                {"url": ALICE + "/", "role": "crypto_provider"},
            ],
            "a model&#x27;s crypto provider cannot be one of its workers.",
        ),
        (
            [
                {"url": ALICE, "role": "worker"},
                {"url": "http://ALICE.example:5000", "role": "worker"},
                {"url": CRYPTO, "role": "crypto_provider"},
            ],
            "is the same address as an earlier one",
        ),
        (
            [
                {"url": ALICE, "role": "worker"},
                {"url": "javascript:alert(1)", "role": "worker"},
                {"url": CRYPTO, "role": "crypto_provider"},
            ],
            "must be an absolute http or https URL with a host.",
        ),
        (
            [
                {"url": ALICE, "role": "worker"},
                {"url": "http://user:pw@bob.example", "role": "worker"},
                {"url": CRYPTO, "role": "crypto_provider"},
            ],
            "must not carry a user name or password.",
        ),
    ],
)
def test_adding_refuses_what_the_api_refuses(admin_client, rows, message):
    response = admin_client.post(f"{REGISTRATIONS}add/", {"model_id": "refused", **inline_rows(rows)})

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not EncryptedModel.objects.exists()
    assert not WorkerNode.objects.exists()


def test_adding_a_taken_model_id_is_refused(admin_client, register):
    register("taken")
    rows = [
        {"url": CAROL, "role": "worker"},
        {"url": "http://dave.example", "role": "worker"},
        {"url": "http://eve.example", "role": "crypto_provider"},
    ]

    response = admin_client.post(f"{REGISTRATIONS}add/", {"model_id": "taken", **inline_rows(rows)})

    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert stored_nodes("taken") == {"workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}
    assert WorkerNode.objects.count() == 3


def test_the_change_page_lists_the_nodes_in_order(admin_client, register):
    register("shown", workers=[CAROL, ALICE], crypto_provider=[CRYPTO])

    response = admin_client.get(change_url("shown"))

    assert response.status_code == 200
    formset = response.context["inline_admin_formsets"][0].formset
    shown = [(form.initial.get("url"), form.initial.get("role")) for form in formset.initial_forms]
    assert shown == [(CAROL, "worker"), (ALICE, "worker"), (CRYPTO, "crypto_provider")]


def test_operators_reorder_add_and_remove_workers(admin_client, register):
    register("edited", workers=[ALICE, BOB, CAROL], crypto_provider=[CRYPTO], description="before")
    rows = saved_rows("edited")
    rows[0]["position"] = "5"  # Alice goes last
    rows[1]["DELETE"] = "on"  # Bob goes
    rows.append({"url": "http://dave.example", "role": "worker", "position": "3"})
    data = {"model_id": "ignored", "description": "after", **inline_rows(rows, initial=4)}

    response = admin_client.post(change_url("edited"), data)

    assert response.status_code == 302
    registration = EncryptedModel.objects.get()
    assert (registration.model_id, registration.description) == ("edited", "after")
    assert stored_nodes("edited") == {"workers": [CAROL, "http://dave.example", ALICE], "crypto_provider": [CRYPTO]}
    rows = NodeAssignment.objects.filter(registration=registration, role="worker").order_by("position")
    assert list(rows.values_list("position", flat=True)) == [0, 1, 2]
    # Bob served no other model: his row went with him.
    assert not WorkerNode.objects.filter(url=BOB).exists()


def test_swapping_a_worker_and_the_provider(admin_client, register, api):
    register("swapped", workers=[ALICE, BOB], crypto_provider=[CRYPTO])
    rows = saved_rows("swapped")
    rows[1]["role"], rows[2]["role"] = "crypto_provider", "worker"

    response = admin_client.post(change_url("swapped"), {"description": "", **inline_rows(rows, initial=3)})

    assert response.status_code == 302
    assert stored_nodes("swapped") == {"workers": [ALICE, CRYPTO], "crypto_provider": [BOB]}
    answer = api.post("/search-encrypted-models", {"model_id": "swapped"}, format="json").json()
    assert answer == {"workers": [ALICE, CRYPTO], "crypto_provider": [BOB]}
    assert WorkerNode.objects.count() == 3


def test_removing_a_worker_that_leaves_one_is_refused(admin_client, register):
    register("kept", workers=[ALICE, BOB], crypto_provider=[CRYPTO])
    rows = saved_rows("kept")
    rows[1]["DELETE"] = "on"

    response = admin_client.post(change_url("kept"), {"description": "changed", **inline_rows(rows, initial=3)})

    assert response.status_code == 200
    assert "needs at least 2 distinct worker URLs" in response.content.decode()
    assert EncryptedModel.objects.get().description == ""
    assert stored_nodes("kept") == {"workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}


def test_a_row_marked_for_deletion_is_not_checked(admin_client, register):
    register("kept", workers=[ALICE, BOB, CAROL], crypto_provider=[CRYPTO])
    rows = saved_rows("kept")
    rows[2].update(url="not a url", DELETE="on")

    response = admin_client.post(change_url("kept"), {"description": "", **inline_rows(rows, initial=4)})

    assert response.status_code == 302
    assert stored_nodes("kept") == {"workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}


def test_deleting_from_the_admin_prunes_unused_nodes(admin_client, register):
    register("gone", workers=[ALICE, BOB], crypto_provider=[CRYPTO])
    register("kept", workers=[ALICE, CAROL], crypto_provider=[BOB])
    registration = EncryptedModel.objects.get(model_id="gone")

    response = admin_client.post(f"{REGISTRATIONS}{registration.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert list(EncryptedModel.objects.values_list("model_id", flat=True)) == ["kept"]
    assert sorted(WorkerNode.objects.values_list("url", flat=True)) == sorted([ALICE, BOB, CAROL])


def test_the_delete_action_prunes_unused_nodes(admin_client, register):
    register("one", workers=[ALICE, BOB])
    register("two", workers=[ALICE, CAROL])
    ids = [str(pk) for pk in EncryptedModel.objects.values_list("pk", flat=True)]

    response = admin_client.post(REGISTRATIONS, {"action": "delete_selected", "_selected_action": ids, "post": "yes"})

    assert response.status_code == 302
    assert not EncryptedModel.objects.exists()
    assert not WorkerNode.objects.exists()


def test_the_node_list_says_which_models_use_each_node(admin_client, register):
    register("alpha", workers=[ALICE, BOB], crypto_provider=[CRYPTO])
    register("beta", workers=[ALICE, CAROL], crypto_provider=[BOB])

    response = admin_client.get(NODES)

    assert response.status_code == 200
    page = response.content.decode()
    assert "alpha (worker), beta (worker)" in page
    assert "alpha (worker), beta (crypto provider)" in page
    assert "alpha (crypto provider)" in page


def test_nodes_are_not_added_by_hand(admin_client):
    assert admin_client.get(f"{NODES}add/").status_code == 403


def test_operators_set_a_node_id_but_not_the_url(admin_client, register):
    register("alpha")
    node = WorkerNode.objects.get(url=ALICE)

    response = admin_client.post(
        f"{NODES}{node.pk}/change/", {"url": "http://elsewhere.example", "node_id": "alice", "last_seen": ""}
    )

    assert response.status_code == 302
    node.refresh_from_db()
    assert (node.url, node.node_id, node.last_seen) == (ALICE, "alice", None)


def test_a_node_id_follows_the_id_rules_and_is_unique(admin_client, register):
    register("alpha")
    WorkerNode.objects.filter(url=BOB).update(node_id="bob")
    node = WorkerNode.objects.get(url=ALICE)

    bad = admin_client.post(f"{NODES}{node.pk}/change/", {"node_id": "not ok!", "last_seen": ""})
    taken = admin_client.post(f"{NODES}{node.pk}/change/", {"node_id": "bob", "last_seen": ""})

    assert bad.status_code == taken.status_code == 200
    assert "Node ids are" in bad.content.decode()
    assert "Another worker node has this node id." in taken.content.decode()
    node.refresh_from_db()
    assert node.node_id == ""


def test_a_node_in_use_cannot_be_deleted(admin_client, register):
    register("alpha")
    node = WorkerNode.objects.get(url=ALICE)

    response = admin_client.post(f"{NODES}{node.pk}/delete/", {"post": "yes"})

    assert response.status_code == 200
    assert "Cannot delete" in response.content.decode()
    assert WorkerNode.objects.filter(pk=node.pk).exists()
    assert stored_nodes("alpha")["workers"] == [ALICE, BOB]


@pytest.mark.parametrize("path", [REGISTRATIONS, NODES])
def test_the_admin_needs_a_staff_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
