"""GET and PATCH /encrypted-models/<model_id>/share, the share in a registration's answer, and `share_load`,
which the encrypted-inference runtime calls to get the part it runs."""

import io

import pytest
import torch

from gridnode.errors import BadRequest, Conflict, Forbidden, NotFound
from smpc_app.models import ModelShare
from smpc_app.shares import part_cache, share_load

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/encrypted-models/shown/share", "/encrypted-models/shown/share/"])
def test_it_shows_the_share(api, upload_share, path):
    uploaded = upload_share("shown", "worker", 1, allow_remote_inference=True)

    response = api.get(path)

    assert response.status_code == 200
    assert response.json() == uploaded
    assert (response.json()["role"], response.json()["party"], response.json()["allow_download"]) == (
        "worker",
        1,
        False,
    )
    assert ModelShare.objects.get().party == 1


def test_it_answers_404_when_this_node_holds_no_share(api, register):
    register("bare")
    response = api.get("/encrypted-models/bare/share")
    assert response.status_code == 404
    assert response.json() == {"error": "This node holds no share of this encrypted model."}


def test_it_answers_404_for_an_unknown_model(api, upload_share):
    upload_share("known")
    response = api.get("/encrypted-models/unknown/share")
    assert response.status_code == 404
    assert response.json() == {"error": "Encrypted model not found."}


def test_it_answers_400_for_an_id_outside_the_rules(api):
    response = api.get("/encrypted-models/bad!id/share")
    assert response.status_code == 400
    assert "'model_id'" in response.json()["error"]


def test_it_answers_401_without_a_token_when_reads_are_closed(api, upload_share, settings):
    upload_share("closed")
    settings.GRIDNODE_AUTH_READ = True
    response = api.get("/encrypted-models/closed/share")
    assert response.status_code == 401
    assert set(response.json()) == {"error"}


def test_the_registration_answers_its_share(api, register, upload_share):
    register("bare")
    uploaded = upload_share("held", "crypto_provider", None)

    held = api.get("/encrypted-models/held").json()
    bare = api.get("/encrypted-models/bare").json()
    listed = api.get("/encrypted-models").json()["encrypted_models"]

    assert held["share"] == uploaded
    assert bare["share"] is None
    assert {entry["model_id"]: entry["share"] for entry in listed} == {"bare": None, "held": uploaded}


def test_the_list_reads_shares_without_a_query_per_registration(api, register, upload_share, django_assert_num_queries):
    for index in range(4):
        upload_share(f"m{index}", "worker", index % 2)
    register("bare")
    # One query for the registrations with their shares joined, one for their nodes.
    with django_assert_num_queries(2):
        response = api.get("/encrypted-models")
    assert [entry["share"] is not None for entry in response.json()["encrypted_models"]] == [True] * 4 + [False]


# PATCH: who may run or download a share.


@pytest.mark.parametrize("path", ["/encrypted-models/flags/share", "/encrypted-models/flags/share/"])
def test_patch_sets_the_flags_it_is_given_and_keeps_the_others(api, upload_share, path):
    upload_share("flags")

    response = api.patch(path, {"allow_remote_inference": True}, format="json")

    assert response.status_code == 200
    assert (response.json()["allow_remote_inference"], response.json()["allow_download"]) == (True, False)
    share = ModelShare.objects.get()
    assert (share.allow_remote_inference, share.allow_download) == (True, False)
    assert api.get("/encrypted-models/flags/share").json() == response.json()


@pytest.mark.parametrize("content", ["multipart", "form"])
def test_patch_takes_form_booleans(api, upload_share, content):
    upload_share("flags", allow_remote_inference=True)
    body = {"allow_remote_inference": "False", "allow_download": "0"}

    if content == "multipart":
        response = api.patch("/encrypted-models/flags/share", body, format="multipart")
    else:
        response = api.patch(
            "/encrypted-models/flags/share",
            "allow_remote_inference=False&allow_download=0",
            content_type="application/x-www-form-urlencoded",
        )

    assert response.status_code == 200, response.content
    share = ModelShare.objects.get()
    assert (share.allow_remote_inference, share.allow_download) == (False, False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Send 'allow_remote_inference', 'allow_download' or both."),
        ({"allow_dowload": True}, "Send 'allow_remote_inference', 'allow_download' or both."),
        ({"allow_download": "yes"}, "'allow_download' must be true or false."),
        ({"allow_remote_inference": True, "allow_download": 2}, "'allow_download' must be true or false."),
    ],
)
def test_patch_refuses_what_it_cannot_read(api, upload_share, body, message):
    upload_share("flags")

    response = api.patch("/encrypted-models/flags/share", body, format="json")

    assert response.status_code == 400
    assert response.json() == {"error": message}
    share = ModelShare.objects.get()
    assert (share.allow_remote_inference, share.allow_download) == (False, False)


def test_patch_answers_404_without_a_share(api, register):
    register("bare")
    response = api.patch("/encrypted-models/bare/share", {"allow_remote_inference": True}, format="json")
    assert response.status_code == 404
    assert response.json() == {"error": "This node holds no share of this encrypted model."}


def test_patch_answers_404_for_an_unknown_model(api):
    response = api.patch("/encrypted-models/unknown/share", {"allow_remote_inference": True}, format="json")
    assert response.status_code == 404
    assert response.json() == {"error": "Encrypted model not found."}


def test_patch_answers_401_without_a_token_when_writes_are_closed(api, upload_share, settings):
    upload_share("closed")
    settings.GRIDNODE_AUTH_WRITE = True
    response = api.patch("/encrypted-models/closed/share", {"allow_download": True}, format="json")
    assert response.status_code == 401
    assert ModelShare.objects.get().allow_download is False


# share_load: the part the runtime runs.


def test_share_load_answers_the_share_its_spec_and_its_tensors(upload_share, shared_model):
    upload_share("run", "worker", 1, allow_remote_inference=True)

    share, spec, part = share_load(model_id="run", role="worker")

    assert (share.registration.model_id, share.role, share.party) == ("run", "worker", 1)
    assert spec == shared_model.spec
    assert spec.digest() == share.spec_digest
    assert part.keys() == shared_model.worker_parts[1].keys()
    for name, tensor in shared_model.worker_parts[1].items():
        assert torch.equal(part[name], tensor)


def test_share_load_reads_the_file_once_per_process(upload_share, monkeypatch):
    upload_share("cached", "crypto_provider", None, allow_remote_inference=True)
    first = share_load(model_id="cached", role="crypto_provider")
    assert ("cached", first[0].archive.name) in part_cache

    def no_reads(*args, **kwargs):
        raise AssertionError("read the stored part again")

    monkeypatch.setattr(torch, "load", no_reads)
    second = share_load(model_id="cached", role="crypto_provider")

    assert second[2] is first[2]
    assert second[1] is first[1]


def test_share_load_never_serves_a_replaced_share_stale(api, upload_share, shared_model):
    upload_share("replaced", "worker", 0, allow_remote_inference=True)
    old_share, _, old_part = share_load(model_id="replaced", role="worker")
    assert api.delete("/encrypted-models/replaced/share").status_code == 204
    upload_share("replaced", "worker", 1, registered=True, allow_remote_inference=True)

    share, _, part = share_load(model_id="replaced", role="worker")

    assert share.archive.name != old_share.archive.name
    assert share.party == 1
    assert torch.equal(part["0.weight_mask"], shared_model.worker_parts[1]["0.weight_mask"])
    assert not torch.equal(part["0.weight_mask"], old_part["0.weight_mask"])
    assert len(part_cache) == 1


def test_share_load_answers_the_flag_as_it_is_now(api, upload_share):
    upload_share("toggled", allow_remote_inference=True)
    share_load(model_id="toggled", role="worker")
    api.patch("/encrypted-models/toggled/share", {"allow_remote_inference": False}, format="json")

    with pytest.raises(Forbidden) as refused:
        share_load(model_id="toggled", role="worker")

    assert refused.value.message == "Remote inference is not allowed for this encrypted model."


def test_share_load_refuses_a_share_whose_owner_does_not_allow_inference(upload_share):
    upload_share("private")

    with pytest.raises(Forbidden) as refused:
        share_load(model_id="private", role="worker")

    assert refused.value.status == 403
    assert refused.value.message == "Remote inference is not allowed for this encrypted model."
    assert len(part_cache) == 0


@pytest.mark.parametrize(
    ("held", "party", "asked", "message"),
    [
        ("worker", 0, "crypto_provider", "a worker's part of this encrypted model, not the crypto provider's."),
        (
            "crypto_provider",
            None,
            "worker",
            "the crypto provider's part of this encrypted model, not a worker's.",
        ),
    ],
)
def test_share_load_refuses_the_other_roles_part(upload_share, held, party, asked, message):
    upload_share("roles", held, party, allow_remote_inference=True)

    with pytest.raises(Conflict) as refused:
        share_load(model_id="roles", role=asked)

    assert refused.value.message == f"This node holds {message}"
    assert len(part_cache) == 0


@pytest.mark.parametrize(
    ("model_id", "message"),
    [
        ("bare", "This node holds no share of this encrypted model."),
        ("unknown", "Encrypted model not found."),
        ("bad\x00id", "Encrypted model not found."),
    ],
)
def test_share_load_answers_404_without_a_share(register, model_id, message):
    register("bare")

    with pytest.raises(NotFound) as missing:
        share_load(model_id=model_id, role="worker")

    assert missing.value.message == message


def test_share_load_answers_404_when_the_file_went_between_the_query_and_the_read(upload_share):
    upload_share("racing", allow_remote_inference=True)
    ModelShare.objects.get().archive.delete(save=False)

    with pytest.raises(NotFound) as missing:
        share_load(model_id="racing", role="worker")

    assert missing.value.message == "This node holds no share of this encrypted model."


def test_share_load_checks_the_stored_file_against_the_spec(upload_share, shared_model):
    """A stored part that was changed behind the node's back is not run."""
    upload_share("tampered", allow_remote_inference=True)
    share = ModelShare.objects.get()
    buffer = io.BytesIO()
    torch.save({**shared_model.worker_parts[0], "0.bias": torch.zeros(5, dtype=torch.int64)}, buffer)
    with open(share.archive.path, "wb") as stored:
        stored.write(buffer.getvalue())

    with pytest.raises(BadRequest, match="'0.bias' must be an int64 tensor of shape \\[3\\]"):
        share_load(model_id="tampered", role="worker")
    assert len(part_cache) == 0
