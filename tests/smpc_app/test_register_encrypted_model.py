"""POST /encrypted-models (and /encrypted-models/): register a model's workers and crypto provider(s)."""

import pytest

from smpc_app.models import EncryptedModel, NodeAssignment, WorkerNode
from tests.api_cases import BodyIdRuleCases, RequiredIdCases, with_id
from tests.smpc_app.helpers import ALICE, BOB, CAROL, CRYPTO, EncryptedModelCases, stored_nodes

pytestmark = pytest.mark.django_db


class TestIdCases(EncryptedModelCases, BodyIdRuleCases, RequiredIdCases):
    """The id rule on registration. The body names nodes the registration made beforehand does not use,
    so a refused request that left a worker row behind would show."""

    method = "post"
    path = "/encrypted-models"
    effect = "creates"
    ok_status = 201
    id_in_answer = "model_id"

    def body(self, object_id):
        nodes = {"workers": [CAROL, "http://dave.example:5000"], "crypto_provider": ["http://erin.example:5000"]}
        return with_id(nodes, "model_id", object_id)


def post(api, **body):
    return api.post("/encrypted-models", body, format="json")


def assert_nothing_stored():
    assert EncryptedModel.objects.count() == 0
    assert NodeAssignment.objects.count() == 0
    assert WorkerNode.objects.count() == 0


@pytest.mark.parametrize("path", ["/encrypted-models", "/encrypted-models/"])
def test_it_registers_a_model_with_its_nodes(api, path):
    body = {"model_id": "mnist-smpc", "workers": [ALICE, BOB], "crypto_provider": [CRYPTO], "description": "shares"}

    response = api.post(path, body, format="json")

    assert response.status_code == 201
    answer = response.json()
    assert answer.pop("created_at")
    assert answer == {
        "model_id": "mnist-smpc",
        "description": "shares",
        "workers": [ALICE, BOB],
        "crypto_provider": [CRYPTO],
        "share": None,
    }
    assert response["Location"] == "/encrypted-models/mnist-smpc"
    registration = EncryptedModel.objects.get()
    assert (registration.model_id, registration.description) == ("mnist-smpc", "shares")
    rows = NodeAssignment.objects.filter(registration=registration).order_by("role", "position")
    assert list(rows.values_list("role", "position", "node__url")) == [
        ("crypto_provider", 0, CRYPTO),
        ("worker", 0, ALICE),
        ("worker", 1, BOB),
    ]
    assert sorted(WorkerNode.objects.values_list("url", flat=True)) == sorted([ALICE, BOB, CRYPTO])


def test_it_keeps_the_order_it_was_given(api):
    workers = [CAROL, ALICE, BOB]
    providers = ["http://z-crypto.example", "http://a-crypto.example"]

    response = post(api, model_id="ordered", workers=workers, crypto_provider=providers)

    assert response.status_code == 201
    assert (response.json()["workers"], response.json()["crypto_provider"]) == (workers, providers)
    assert stored_nodes("ordered") == {"workers": workers, "crypto_provider": providers}


def test_the_description_is_optional(api):
    response = post(api, model_id="plain", workers=[ALICE, BOB], crypto_provider=[CRYPTO])
    assert response.status_code == 201
    assert response.json()["description"] == ""
    assert EncryptedModel.objects.get().description == ""


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("HTTP://Alice.Example:80/", "http://alice.example"),
        ("https://alice.example:443/grid/", "https://alice.example/grid"),
        ("http://alice.example//", "http://alice.example"),
        ("  http://alice.example:05000  ", "http://alice.example:5000"),
        ("http://[0:0::1]:8080/", "http://[::1]:8080"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://bücher.example", "http://xn--bcher-kva.example"),
        ("http://grid_alice:5000", "http://grid_alice:5000"),
        ("http://alice.example/a%2Fb", "http://alice.example/a%2Fb"),
    ],
)
def test_it_stores_addresses_in_canonical_form(api, sent, stored):
    response = post(api, model_id="canon", workers=[sent, BOB], crypto_provider=[CRYPTO])

    assert response.status_code == 201, response.content
    assert response.json()["workers"] == [stored, BOB]
    assert stored_nodes("canon")["workers"] == [stored, BOB]
    assert WorkerNode.objects.filter(url=stored).exists()


def test_it_reuses_worker_rows_across_registrations(api, register):
    register("first", workers=[ALICE, BOB], crypto_provider=[CRYPTO])
    alice = WorkerNode.objects.get(url=ALICE)

    # Another spelling of Alice's address, and Bob serving as a crypto provider this time.
    register("second", workers=["HTTP://ALICE.example:5000/", CAROL], crypto_provider=[BOB])

    assert WorkerNode.objects.count() == 4
    assert WorkerNode.objects.get(url=ALICE).pk == alice.pk
    assert sorted(alice.encrypted_models.values_list("model_id", flat=True)) == ["first", "second"]
    assert stored_nodes("first") == {"workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}
    assert stored_nodes("second") == {"workers": [ALICE, CAROL], "crypto_provider": [BOB]}


def test_it_accepts_a_form_body_with_repeated_fields(api):
    response = api.post(
        "/encrypted-models",
        "model_id=form&workers=http%3A%2F%2Fa.example&workers=http%3A%2F%2Fb.example"
        "&crypto_provider=http%3A%2F%2Fc.example&description=from+a+form",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 201, response.content
    assert stored_nodes("form") == {
        "workers": ["http://a.example", "http://b.example"],
        "crypto_provider": ["http://c.example"],
    }
    assert EncryptedModel.objects.get().description == "from a form"


def test_it_accepts_a_multipart_body(api):
    response = api.post(
        "/encrypted-models",
        {"model_id": "multi", "workers": [ALICE, BOB], "crypto_provider": [CRYPTO]},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert stored_nodes("multi") == {"workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}


def test_a_form_body_with_one_worker_is_refused(api):
    response = api.post(
        "/encrypted-models",
        "model_id=form&workers=http%3A%2F%2Fa.example&crypto_provider=http%3A%2F%2Fc.example",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400
    assert "'workers'" in response.json()["error"]
    assert_nothing_stored()


def test_it_answers_409_for_a_duplicate_model_id_and_keeps_the_first(api, register):
    first = register("taken", workers=[ALICE, BOB], crypto_provider=[CRYPTO], description="original")

    response = post(
        api, model_id="taken", workers=[CAROL, "http://dave.example"], crypto_provider=["http://eve.example"]
    )

    assert response.status_code == 409
    assert response.json() == {"error": "Encrypted model with id: taken already exists."}
    registration = EncryptedModel.objects.get()
    assert (registration.description, registration.created_at.isoformat().replace("+00:00", "Z")) == (
        "original",
        first["created_at"],
    )
    assert stored_nodes("taken") == {"workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}
    # The loser's new worker rows went with its rolled-back transaction.
    assert sorted(WorkerNode.objects.values_list("url", flat=True)) == sorted([ALICE, BOB, CRYPTO])


BAD_URLS = [
    "ftp://x",
    "http://",
    "http:///path",
    "not a url",
    "javascript:alert(1)",
    "mailto:a@b.example",
    "//alice.example",
    "alice.example:5000",
    "http:alice.example",
    "",
    "   ",
    "http://exa mple.example",
    "http://exa\nmple.example",
    "http://alice.example\\@evil.example",
    "http://-alice.example",
    "http://alice..example",
    "http://1.2.3.999",
    "http://[::zz]",
    "http://[::1",
    "http://]alice.example",
    "http://alice.example/pä th",
    "http://alice.example/päth",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_it_refuses_a_worker_address_that_is_not_an_http_url(api, url):
    response = post(api, model_id="m", workers=[ALICE, url], crypto_provider=[CRYPTO])

    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith("'workers[1]' ")
    assert_nothing_stored()


@pytest.mark.parametrize("url", BAD_URLS)
def test_it_refuses_a_provider_address_that_is_not_an_http_url(api, url):
    response = post(api, model_id="m", workers=[ALICE, BOB], crypto_provider=[url])

    assert response.status_code == 400
    assert response.json()["error"].startswith("'crypto_provider[0]' ")
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://user:secret@alice.example", "must not carry a user name or password"),
        ("http://token@alice.example", "must not carry a user name or password"),
        ("http://alice.example/#secret", "must not have a fragment"),
        ("http://alice.example/?key=secret", "must not have a query string"),
        ("http://alice.example:0", "port that is not a number from 1 to 65535"),
        ("http://alice.example:99999", "port that is not a number from 1 to 65535"),
        ("http://alice.example/" + "a" * 2048, "longer than 2048 characters"),
    ],
)
def test_it_says_why_an_address_is_refused_without_echoing_it(api, url, reason):
    response = post(api, model_id="m", workers=[ALICE, url], crypto_provider=[CRYPTO])

    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith("'workers[1]' ")
    assert reason in error
    assert "secret" not in error
    assert_nothing_stored()


@pytest.mark.parametrize("workers", [[], [ALICE]])
def test_it_needs_at_least_two_workers(api, workers):
    response = post(api, model_id="m", workers=workers, crypto_provider=[CRYPTO])

    assert response.status_code == 400
    assert response.json() == {"error": "'workers' needs at least 2 distinct worker URLs."}
    assert_nothing_stored()


@pytest.mark.parametrize("workers", [[ALICE, ALICE], [ALICE, BOB, "HTTP://alice.example:5000/"]])
def test_it_refuses_a_worker_listed_twice(api, workers):
    response = post(api, model_id="m", workers=workers, crypto_provider=[CRYPTO])

    assert response.status_code == 400
    assert response.json()["error"].startswith(f"'workers[{len(workers) - 1}]' is the same address as an earlier one")
    assert_nothing_stored()


def test_it_refuses_a_provider_listed_twice(api):
    response = post(api, model_id="m", workers=[ALICE, BOB], crypto_provider=[CRYPTO, CRYPTO + "/"])
    assert response.status_code == 400
    assert response.json()["error"].startswith("'crypto_provider[1]' is the same address")
    assert_nothing_stored()


def test_it_accepts_several_crypto_providers(api):
    response = post(api, model_id="m", workers=[ALICE, BOB], crypto_provider=[CRYPTO, CAROL])
    assert response.status_code == 201
    assert stored_nodes("m") == {"workers": [ALICE, BOB], "crypto_provider": [CRYPTO, CAROL]}


@pytest.mark.parametrize("provider", [BOB, "http://BOB.example:5000/"])
def test_it_refuses_a_provider_that_is_also_a_worker(api, provider):
    response = post(api, model_id="m", workers=[ALICE, BOB], crypto_provider=[CRYPTO, provider])

    assert response.status_code == 400
    assert response.json() == {
        "error": "'crypto_provider[1]' is also in 'workers': a model's crypto provider cannot be one of its workers."
    }
    assert_nothing_stored()


def test_it_needs_a_crypto_provider(api):
    response = post(api, model_id="m", workers=[ALICE, BOB], crypto_provider=[])

    assert response.status_code == 400
    assert response.json() == {"error": "'crypto_provider' needs at least one URL."}
    assert_nothing_stored()


@pytest.mark.parametrize("missing", ["workers", "crypto_provider"])
def test_it_needs_both_lists(api, missing):
    body = {"model_id": "m", "workers": [ALICE, BOB], "crypto_provider": [CRYPTO]}
    del body[missing]

    response = api.post("/encrypted-models", body, format="json")

    assert response.status_code == 400
    assert response.json() == {"error": f"'{missing}' is required: a list of URLs."}
    assert_nothing_stored()


@pytest.mark.parametrize("field", ["workers", "crypto_provider"])
@pytest.mark.parametrize("value", [ALICE, {"url": ALICE}, 2, True, f"{ALICE},{BOB}"])
def test_it_refuses_a_node_list_that_is_not_a_list(api, field, value):
    body = {"model_id": "m", "workers": [ALICE, BOB], "crypto_provider": [CRYPTO], field: value}

    response = api.post("/encrypted-models", body, format="json")

    assert response.status_code == 400
    assert response.json() == {"error": f"'{field}' must be a list of URLs."}
    assert_nothing_stored()


@pytest.mark.parametrize("item", [1, None, True, [ALICE], {"url": ALICE}])
def test_it_refuses_list_items_that_are_not_strings(api, item):
    response = post(api, model_id="m", workers=[item, BOB], crypto_provider=[CRYPTO])

    assert response.status_code == 400
    assert response.json() == {"error": "'workers[0]' must be a string."}
    assert_nothing_stored()


def test_it_refuses_more_nodes_than_the_limit(api):
    workers = [f"http://worker-{index}.example" for index in range(101)]

    response = post(api, model_id="m", workers=workers, crypto_provider=[CRYPTO])

    assert response.status_code == 400
    assert response.json() == {"error": "'workers' lists more than 100 nodes."}
    assert_nothing_stored()


@pytest.mark.parametrize(("description", "message"), [(5, "must be a string"), ("x" * 10_001, "at most 10000")])
def test_it_refuses_a_bad_description(api, description, message):
    response = post(api, model_id="m", workers=[ALICE, BOB], crypto_provider=[CRYPTO], description=description)

    assert response.status_code == 400
    assert "'description'" in response.json()["error"]
    assert message in response.json()["error"]
    assert_nothing_stored()


@pytest.mark.parametrize("body", ['["m"]', '"m"', "null", "{not json"])
def test_it_refuses_a_body_that_is_not_a_json_object(api, body):
    response = api.post("/encrypted-models", body, content_type="application/json")

    assert response.status_code == 400
    assert "error" in response.json()
    assert "not json" not in response.json()["error"]
    assert_nothing_stored()


def test_it_answers_405_for_put(api):
    response = api.put("/encrypted-models", {}, format="json")
    assert response.status_code == 405
    assert "error" in response.json()
