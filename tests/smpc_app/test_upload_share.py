"""POST /encrypted-models/<model_id>/share: this node's part of a registered model, checked against its spec."""

import base64
import hashlib
import io
import json
import pickle
import zipfile

import pytest
import torch
from django.db import connection
from rest_framework.authtoken.models import Token

from smpc_app.models import EncryptedModel, ModelShare
from smpc_protocol.spec import ModelSpec
from tests.smpc_app.conftest import WritesCanary, staged_files, stored_share_files, torch_saved
from tests.smpc_app.test_concurrency import run_together

pytestmark = pytest.mark.django_db


def multipart(spec: dict, part: bytes, role: str = "worker", party: str | None = "0", **fields) -> dict:
    """A multipart body as a client script sends it: the part as a file, the spec as JSON text."""
    body = {"role": role, "spec": json.dumps(spec), "share": io.BytesIO(part), **fields}
    if party is not None:
        body["party"] = party
    return body


def send(api, model_id: str, body: dict):
    """POST a multipart body to a model's share."""
    return api.post(f"/encrypted-models/{model_id}/share", body, format="multipart")


def assert_nothing_stored(data_dir) -> None:
    """No share row, no share file, nothing left in the staging folder; the registration is untouched."""
    assert ModelShare.objects.count() == 0
    assert stored_share_files(data_dir) == []
    assert staged_files(data_dir) == []


def assert_refused(response, status: int = 400) -> str:
    """A JSON error with this status; returns its message."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    return response.json()["error"]


@pytest.mark.parametrize("path", ["/encrypted-models/mnist:v2@lab/share", "/encrypted-models/mnist:v2@lab/share/"])
@pytest.mark.parametrize("party", [0, 1])
def test_it_stores_a_workers_part_sent_as_a_file(api, register, shared_model, part_bytes, data_dir, path, party):
    register("mnist:v2@lab")
    raw = part_bytes("worker", party)

    response = api.post(path, multipart(shared_model.spec.to_json(), raw, party=str(party)), format="multipart")

    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer.pop("created_at")
    assert answer == {
        "model_id": "mnist:v2@lab",
        "role": "worker",
        "party": party,
        "spec": shared_model.spec.to_json(),
        "spec_digest": shared_model.spec.digest(),
        "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        # Nothing is shared unless its owner says so.
        "allow_remote_inference": False,
        "allow_download": False,
    }
    assert response["Location"] == "/encrypted-models/mnist:v2@lab/share"
    share = ModelShare.objects.get()
    assert share.registration == EncryptedModel.objects.get(model_id="mnist:v2@lab")
    assert (share.role, share.party, share.size, share.uploaded_by) == ("worker", party, len(raw), None)
    assert share.spec_digest == shared_model.spec.digest()
    assert share.archive.name.startswith("shares/")
    assert share.archive.name != "shares/mnist:v2@lab.pt"  # a uuid, never the client's id
    assert share.archive.read() == raw
    assert stored_share_files(data_dir) == [share.archive.name.removeprefix("shares/")]
    assert staged_files(data_dir) == []


@pytest.mark.parametrize("encoding", ["base64", "ISO-8859-1", "latin-1"])
def test_it_stores_the_crypto_providers_part_sent_as_text_in_json(api, register, shared_model, part_bytes, encoding):
    register("provided")
    raw = part_bytes("crypto_provider")
    text = base64.b64encode(raw).decode() if encoding == "base64" else raw.decode("latin-1")
    body = {
        "role": "crypto_provider",
        "spec": shared_model.spec.to_json(),
        "encoding": encoding,
        "share": text,
        "allow_remote_inference": True,
        "allow_download": "False",
    }

    response = api.post("/encrypted-models/provided/share", body, format="json")

    assert response.status_code == 201, response.content
    assert (response.json()["role"], response.json()["party"]) == ("crypto_provider", None)
    share = ModelShare.objects.get()
    assert (share.role, share.party) == ("crypto_provider", None)
    assert (share.allow_remote_inference, share.allow_download) == (True, False)
    assert share.archive.read() == raw
    assert share.sha256 == hashlib.sha256(raw).hexdigest()


def test_it_takes_form_booleans_as_text(api, register, shared_model, part_bytes):
    register("flags")
    body = multipart(
        shared_model.spec.to_json(), part_bytes("worker", 1), party="1", allow_remote_inference="1", allow_download="0"
    )

    response = send(api, "flags", body)

    assert response.status_code == 201
    share = ModelShare.objects.get()
    assert (share.allow_remote_inference, share.allow_download) == (True, False)


@pytest.mark.parametrize("value", ["yes", "2", "on"])
def test_it_refuses_a_boolean_it_cannot_read(api, register, shared_model, part_bytes, data_dir, value):
    register("flags")
    body = multipart(shared_model.spec.to_json(), part_bytes("worker", 0), allow_download=value)

    response = send(api, "flags", body)

    assert assert_refused(response) == "'allow_download' must be true or false."
    assert_nothing_stored(data_dir)


def test_it_records_the_uploader_of_a_token(api, register, shared_model, part_bytes, django_user_model):
    register("owned")
    owner = django_user_model.objects.create_user("owner")
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=owner).key}")

    response = send(api, "owned", multipart(shared_model.spec.to_json(), part_bytes("worker", 0)))

    assert response.status_code == 201
    assert ModelShare.objects.get().uploaded_by == owner


def test_it_answers_401_without_a_token_when_writes_are_closed(api, register, shared_model, part_bytes, settings):
    register("closed")
    settings.GRIDNODE_AUTH_WRITE = True

    response = send(api, "closed", multipart(shared_model.spec.to_json(), part_bytes("worker", 0)))

    assert response.status_code == 401
    assert not ModelShare.objects.exists()


def test_it_answers_404_for_an_unknown_model(api, register, shared_model, part_bytes, data_dir):
    register("known")

    response = send(api, "unknown", multipart(shared_model.spec.to_json(), part_bytes("worker", 0)))

    assert assert_refused(response, 404) == "Encrypted model not found."
    assert_nothing_stored(data_dir)


def test_it_answers_400_for_an_id_outside_the_rules(api, shared_model, part_bytes, data_dir):
    response = send(api, "bad!id", multipart(shared_model.spec.to_json(), part_bytes("worker", 0)))

    assert "'model_id'" in assert_refused(response)
    assert_nothing_stored(data_dir)


def test_a_second_part_for_the_same_model_is_a_409(api, upload_share, shared_model, part_bytes, data_dir):
    first = upload_share("once", "worker", 0)
    stored = stored_share_files(data_dir)

    response = send(api, "once", multipart(shared_model.spec.to_json(), part_bytes("worker", 1), party="1"))

    assert assert_refused(response, 409) == "Encrypted model with id: once already has a share on this node."
    share = ModelShare.objects.get()
    assert (share.party, share.sha256) == (0, first["sha256"])
    assert stored_share_files(data_dir) == stored
    assert staged_files(data_dir) == []


@pytest.mark.parametrize(
    ("role", "party", "message"),
    [
        (None, "0", "'role' must be worker or crypto_provider."),
        ("owner", "0", "'role' must be worker or crypto_provider."),
        ("worker", None, "'party' is required for a worker: 0 or 1."),
        ("worker", "2", "'party' must be 0 or 1."),
        ("worker", "-1", "'party' must be 0 or 1."),
        ("worker", "zero", "'party' must be 0 or 1."),
        ("crypto_provider", "0", "'party' is for workers only: leave it out for the crypto provider."),
    ],
)
def test_it_refuses_a_role_and_party_that_do_not_go_together(
    api, register, shared_model, part_bytes, data_dir, role, party, message
):
    register("combo")
    body = multipart(shared_model.spec.to_json(), part_bytes("worker", 0), party=party)
    if role is None:
        del body["role"]
    else:
        body["role"] = role

    response = send(api, "combo", body)

    assert assert_refused(response) == message
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize("party", [True, 0.5, [0], "01"])
def test_it_refuses_a_json_party_that_is_not_0_or_1(api, register, shared_model, part_bytes, data_dir, party):
    register("combo")
    body = {
        "role": "worker",
        "party": party,
        "spec": shared_model.spec.to_json(),
        "encoding": "base64",
        "share": base64.b64encode(part_bytes("worker", 0)).decode(),
    }

    response = api.post("/encrypted-models/combo/share", body, format="json")

    assert assert_refused(response) == "'party' must be 0 or 1."
    assert_nothing_stored(data_dir)


def test_a_workers_part_uploaded_as_the_providers_is_refused(api, register, shared_model, part_bytes, data_dir):
    register("swapped")
    body = multipart(shared_model.spec.to_json(), part_bytes("worker", 0), role="crypto_provider", party=None)

    response = send(api, "swapped", body)

    message = assert_refused(response)
    assert message.startswith("'share' does not hold the tensors the spec needs for the crypto provider's part")
    assert "4 other entries" in message
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize(
    ("spec_text", "message"),
    [
        (None, "'spec' is required: the model's spec (ModelSpec.to_json()) as a JSON object."),
        ("{not json", "'spec' is not JSON."),
        ("[1, 2]", "'spec' must be a JSON object."),
        ('{"version": 1, "input_shape": [4], "layers": [], "<script>": 1}', "'spec' has keys other than"),
        ('{"version": 2, "input_shape": [4], "layers": [{"type": "relu"}]}', "the spec's 'version' must be 1"),
        ('{"version": 1, "input_shape": [4], "layers": [{"type": "lstm"}]}', "layer 0 must be an object"),
        ('{"version": 1, "input_shape": [4], "layers": [{"type": ["linear"]}]}', "a layer's 'type' must be text"),
        (
            '{"version": 1, "input_shape": [4], "layers": '
            '[{"type": "linear", "in_features": 5, "out_features": 3, "bias": true}]}',
            "is not a model the protocol runs",
        ),
    ],
)
def test_it_refuses_a_spec_the_protocol_cannot_run(api, register, part_bytes, data_dir, spec_text, message):
    register("spec")
    body = {"role": "worker", "party": "0", "share": io.BytesIO(part_bytes("worker", 0))}
    if spec_text is not None:
        body["spec"] = spec_text

    response = send(api, "spec", body)

    error = assert_refused(response)
    assert message in error
    assert "<script>" not in error  # an error never echoes the payload
    assert_nothing_stored(data_dir)


def test_a_part_of_another_model_does_not_fit_the_spec(api, register, part_bytes, data_dir):
    register("other")
    bigger = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    spec = ModelSpec.from_sequential(bigger, (4,)).to_json()

    response = send(api, "other", multipart(spec, part_bytes("worker", 0)))

    assert (
        assert_refused(response)
        == "'share' does not fit the spec: '0.weight_mask' must be an int64 tensor of shape [4, 5]."
    )
    assert_nothing_stored(data_dir)


def _changed_part(shared_model, change) -> bytes:
    part = dict(shared_model.worker_parts[0])
    change(part)
    return torch_saved(part)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda part: part.pop("2.bias"), "(missing: 2.bias; 0 other entries)"),
        (lambda part: part.update(extra=torch.zeros(1, dtype=torch.int64)), "(missing: none; 1 other entries)"),
        (
            lambda part: part.update({"0.bias": torch.zeros(4, dtype=torch.int64)}),
            "'0.bias' must be an int64 tensor of shape [3]",
        ),
        (
            lambda part: part.update({"0.masked_weight": torch.zeros(4, 3, dtype=torch.int32)}),
            "'0.masked_weight' must be an int64 tensor of shape [4, 3]",
        ),
        (
            lambda part: part.update({"0.masked_weight": torch.zeros(4, 3)}),
            "'0.masked_weight' must be an int64 tensor of shape [4, 3]",
        ),
        (
            lambda part: part.update({"0.masked_weight": torch.zeros(3, 4, dtype=torch.int64).t()}),
            "'0.masked_weight' must be a dense, contiguous tensor",
        ),
        (
            lambda part: part.update({"0.bias": [0, 0, 0]}),
            "'0.bias' must be an int64 tensor of shape [3]",
        ),
    ],
    ids=["missing", "extra", "shape", "int32", "float", "transposed", "list"],
)
def test_a_part_that_does_not_match_the_spec_is_refused(api, register, shared_model, data_dir, change, message):
    register("mismatch")
    raw = _changed_part(shared_model, change)

    response = send(api, "mismatch", multipart(shared_model.spec.to_json(), raw))

    assert message in assert_refused(response)
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "'share' is empty."),
        (b"not a torch file at all", "'share' is not a torch.save file"),
        (torch_saved(torch.zeros(4, 3, dtype=torch.int64)), "'share' must hold a dict of named tensors."),
        (torch_saved([torch.zeros(3, dtype=torch.int64)]), "'share' must hold a dict of named tensors."),
        (b"PK\x03\x04" + b"\x00" * 100, "'share' is not a readable zip file."),
    ],
    ids=["empty", "text", "a-tensor", "a-list", "broken-zip"],
)
def test_a_file_that_is_not_a_saved_dict_is_refused(api, register, shared_model, data_dir, raw, message):
    register("junk")

    response = send(api, "junk", multipart(shared_model.spec.to_json(), raw))

    assert message in assert_refused(response)
    assert_nothing_stored(data_dir)


def test_the_legacy_torch_format_is_refused(api, register, shared_model, data_dir):
    register("legacy")
    buffer = io.BytesIO()
    torch.save(shared_model.worker_parts[0], buffer, _use_new_zipfile_serialization=False)

    response = send(api, "legacy", multipart(shared_model.spec.to_json(), buffer.getvalue()))

    assert "(a zip archive, as torch has written since 1.6)" in assert_refused(response)
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize("carrier", ["file-part", "base64"])
@pytest.mark.parametrize("payload", ["raw-pickle", "beside-the-tensors", "instead-of-a-tensor", "legacy"])
def test_a_pickle_that_runs_code_is_never_unpickled(api, register, shared_model, canary, data_dir, carrier, payload):
    register("hostile")
    part = dict(shared_model.worker_parts[0])
    if payload == "raw-pickle":
        raw = pickle.dumps(WritesCanary(canary))
    elif payload == "beside-the-tensors":
        raw = torch_saved({**part, "x": WritesCanary(canary)})
    elif payload == "instead-of-a-tensor":
        raw = torch_saved({**part, "0.bias": WritesCanary(canary)})
    else:
        buffer = io.BytesIO()
        torch.save({**part, "0.bias": WritesCanary(canary)}, buffer, _use_new_zipfile_serialization=False)
        raw = buffer.getvalue()
    if carrier == "file-part":
        response = send(api, "hostile", multipart(shared_model.spec.to_json(), raw))
    else:
        body = {
            "role": "worker",
            "party": 0,
            "spec": shared_model.spec.to_json(),
            "encoding": "base64",
            "share": base64.b64encode(raw).decode(),
        }
        response = api.post("/encrypted-models/hostile/share", body, format="json")

    assert_refused(response)
    assert not canary.exists()
    assert_nothing_stored(data_dir)


def test_a_zip_that_unpacks_past_what_the_spec_needs_is_refused(api, register, shared_model, data_dir):
    register("bomb")
    raw = torch_saved(shared_model.worker_parts[0])
    # The same part with a deflated entry of 8 MiB of zeros beside it: a small file that unpacks large.
    with zipfile.ZipFile(io.BytesIO(raw)) as source:
        entries = {info.filename: source.read(info.filename) for info in source.infolist()}
    prefix = next(iter(entries)).split("/")[0]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
        archive.writestr(f"{prefix}/padding", b"\0" * (8 * 1024 * 1024), compress_type=zipfile.ZIP_DEFLATED)
    assert len(buffer.getvalue()) < 64 * 1024

    response = send(api, "bomb", multipart(shared_model.spec.to_json(), buffer.getvalue()))

    assert "unpacks to" in assert_refused(response)
    assert_nothing_stored(data_dir)


def test_a_view_into_a_large_storage_is_refused(api, register, shared_model, data_dir):
    """torch.save writes a view's whole storage: the part would hold far more bytes than its shapes."""
    register("view")
    large = torch.zeros(512 * 1024, dtype=torch.int64)
    part = {**shared_model.worker_parts[0], "0.bias": large[:3]}

    response = send(api, "view", multipart(shared_model.spec.to_json(), torch_saved(part)))

    assert "unpacks to" in assert_refused(response)
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "'share' is required."),
        ({"share": "AAAA"}, "'share' sent as text needs an 'encoding' (ISO-8859-1 or base64)."),
        ({"share": "AAAA", "encoding": "rot13"}, "Unknown encoding: use ISO-8859-1, latin-1, base64."),
        ({"share": "not base64!", "encoding": "base64"}, "'share' is not valid base64."),
        ({"share": "\u0394", "encoding": "latin-1"}, "'share' has characters outside ISO-8859-1."),
        (
            {"share": [1, 2], "encoding": "base64"},
            "'share' must be text under an 'encoding', or a multipart file part.",
        ),
    ],
)
def test_it_refuses_a_share_field_it_cannot_read(api, register, shared_model, data_dir, body, message):
    register("text")
    body = {"role": "worker", "party": 0, "spec": shared_model.spec.to_json(), **body}

    response = api.post("/encrypted-models/text/share", body, format="json")

    assert assert_refused(response) == message
    assert_nothing_stored(data_dir)


def test_it_answers_413_for_a_part_over_the_model_limit(api, register, shared_model, part_bytes, data_dir, settings):
    register("large")
    settings.GRIDNODE_MAX_MODEL_BYTES = 1024

    response = send(api, "large", multipart(shared_model.spec.to_json(), part_bytes("worker", 0)))

    assert assert_refused(response, 413) == "The share is larger than this node accepts (1024 bytes)."
    assert_nothing_stored(data_dir)


def test_a_failed_row_insert_leaves_no_file(api, register, shared_model, part_bytes, data_dir, monkeypatch):
    register("rollback")

    def refuse(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(ModelShare, "save", refuse)
    api.raise_request_exception = False

    response = send(api, "rollback", multipart(shared_model.spec.to_json(), part_bytes("worker", 0)))

    assert response.status_code == 500
    assert_nothing_stored(data_dir)


# Concurrent requests: SQLite serializes every write, so these only say something (and only run) on PostgreSQL.
needs_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_parts_uploaded_at_once_are_one_201_and_409s(register, shared_model, part_bytes, data_dir):
    register("raced")
    bodies = [
        multipart(shared_model.spec.to_json(), part_bytes("worker", party), party=str(party)) for party in (0, 1, 0, 1)
    ]
    uploads = [lambda client, body=body: send(client, "raced", body) for body in bodies]

    results = [response.status_code for response in run_together(*uploads)]

    assert sorted(results) == [201, 409, 409, 409]
    share = ModelShare.objects.get()
    # The losers' files were removed: only the winner's is stored.
    assert stored_share_files(data_dir) == [share.archive.name.removeprefix("shares/")]
    assert staged_files(data_dir) == []


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_registration_deleted_during_an_upload_leaves_no_file(register, shared_model, part_bytes, data_dir):
    for attempt in range(5):
        model_id = f"racing-{attempt}"
        register(model_id)
        body = multipart(shared_model.spec.to_json(), part_bytes("worker", 0))

        upload, deletion = run_together(
            lambda client, body=body, model_id=model_id: send(client, model_id, body).status_code,
            lambda client, model_id=model_id: client.delete(f"/encrypted-models/{model_id}").status_code,
        )

        # Whichever came first, the registration is gone and its share with it.
        assert (upload, deletion) in ((201, 204), (404, 204))
    assert not EncryptedModel.objects.exists()
    assert not ModelShare.objects.exists()
    assert stored_share_files(data_dir) == []
    assert staged_files(data_dir) == []


def test_the_documents_example_upload_is_accepted(api, register):
    """/api/schema/ offers a real part as its example, so that generated requests reach this happy path."""
    register("shared")
    operation = api.get("/api/schema/?format=json").json()["paths"]["/encrypted-models/{model_id}/share"]["post"]
    example = next(iter(operation["requestBody"]["content"]["application/json"]["examples"].values()))["value"]

    response = api.post("/encrypted-models/shared/share", example, format="json")

    assert response.status_code == 201, response.content
    share = ModelShare.objects.get()
    assert (share.role, share.party, share.allow_remote_inference) == ("crypto_provider", None, True)
    assert share.spec == example["spec"]
