"""Concurrent requests on PostgreSQL: the database settles races between registrations and deletions.

SQLite serializes every write, so these only say something (and only run) on PostgreSQL.
"""

import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from smpc_app.models import EncryptedModel, NodeAssignment, WorkerNode
from tests.smpc_app.helpers import ALICE, BOB, CAROL, CRYPTO, stored_nodes

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks and concurrent writers need PostgreSQL"),
]


def run_together(*requests) -> list:
    """Run each request (a function of an APIClient) in its own thread and connection, all released at once."""
    barrier = threading.Barrier(len(requests))
    results: list = [None] * len(requests)

    def run(index, request):
        try:
            barrier.wait()
            results[index] = request(APIClient())
        except BaseException as exc:  # reported by the test, not lost in the thread
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def registration(model_id, workers, providers):
    body = {"model_id": model_id, "workers": workers, "crypto_provider": providers}
    return lambda client: client.post("/encrypted-models", body, format="json").status_code


def deletion(model_id):
    return lambda client: client.delete(f"/encrypted-models/{model_id}").status_code


def test_new_addresses_named_at_once_become_one_row_each():
    # Every registration names the same new nodes, in orders that would deadlock an unordered locker.
    requests = [
        registration(f"m{index}", [ALICE, BOB, CAROL][index % 3 :] + [ALICE, BOB, CAROL][: index % 3], [CRYPTO])
        for index in range(8)
    ]

    assert run_together(*requests) == [201] * 8

    assert sorted(WorkerNode.objects.values_list("url", flat=True)) == sorted([ALICE, BOB, CAROL, CRYPTO])
    assert NodeAssignment.objects.count() == 8 * 4


def test_one_model_id_registered_at_once_is_one_201_and_409s():
    requests = [registration("same", [ALICE, f"http://worker-{index}.example"], [CRYPTO]) for index in range(6)]

    results = run_together(*requests)

    assert sorted(results) == [201] + [409] * 5
    assert EncryptedModel.objects.count() == 1
    winner = stored_nodes("same")["workers"][1]
    # The losers' new worker rows rolled back with them.
    assert sorted(WorkerNode.objects.values_list("url", flat=True)) == sorted([ALICE, CRYPTO, winner])


def test_a_node_pruned_and_reused_at_once_is_kept_or_made_again():
    for round_number in range(10):
        old, new = f"old-{round_number}", f"new-{round_number}"
        client = APIClient()
        body = {"model_id": old, "workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}
        assert client.post("/encrypted-models", body, format="json").status_code == 201

        # Deleting `old` prunes Alice and the crypto node unless `new` has claimed them meanwhile.
        results = run_together(deletion(old), registration(new, [CAROL, ALICE], [CRYPTO]))

        assert results == [204, 201]
        assert stored_nodes(new) == {"workers": [CAROL, ALICE], "crypto_provider": [CRYPTO]}
        assert not WorkerNode.objects.filter(url=BOB).exists()
        assert client.delete(f"/encrypted-models/{new}").status_code == 204
        assert not WorkerNode.objects.exists()


def test_two_deletes_at_once_are_one_204_and_one_404():
    client = APIClient()
    body = {"model_id": "once", "workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}
    assert client.post("/encrypted-models", body, format="json").status_code == 201

    assert sorted(run_together(deletion("once"), deletion("once"))) == [204, 404]
    assert not EncryptedModel.objects.exists()
    assert not WorkerNode.objects.exists()
