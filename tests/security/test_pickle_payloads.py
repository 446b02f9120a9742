"""Pickles that would run code when unpickled, sent as a model, as inference data, as a dataset, as v2
binary data and inside zips: refused without running (no canary file), nothing stored.

tests/models_app/test_archive_safety.py covers pickles inside the entries of otherwise valid archives.
"""

import base64
import io
import pickle

import pytest
import torch

from tests.security.conftest import (
    WritesCanary,
    assert_nothing_stored,
    assert_refused,
    entry_name,
    stored_state,
    torch_saved,
    upload_model,
    zip_entries,
    zip_of,
)

pytestmark = pytest.mark.django_db


def legacy_saved(value) -> bytes:
    """torch.save in the pre-1.6 format PyGrid-era clients wrote: a bare pickle stream, no zip."""
    buffer = io.BytesIO()
    torch.save(value, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def payloads(canary) -> dict[str, bytes]:
    """Every way these tests wrap the code-running object."""
    return {
        "raw-pickle": pickle.dumps(WritesCanary(canary)),
        "raw-pickle-protocol-0": pickle.dumps(WritesCanary(canary), protocol=0),
        "torch-save": torch_saved(WritesCanary(canary)),
        "torch-save-legacy": legacy_saved(WritesCanary(canary)),
        "beside-a-tensor": torch_saved([torch.zeros(4), WritesCanary(canary)]),
        "inside-a-tensor-list-legacy": legacy_saved((torch.zeros(4), WritesCanary(canary))),
    }


PAYLOAD_NAMES = list(payloads("x"))


@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
@pytest.mark.parametrize("carrier", ["base64", "latin-1", "file-part"])
def test_a_pickle_as_a_model_is_refused(api, canary, data_dir, payload, carrier):
    raw = payloads(canary)[payload]
    if carrier == "file-part":
        response = api.post("/serve-model", {"model_id": "m", "model": io.BytesIO(raw)}, format="multipart")
    elif carrier == "latin-1":
        body = {"model_id": "m", "encoding": "latin-1", "model": raw.decode("latin-1")}
        response = api.post("/serve-model", body, format="json")
    else:
        response = upload_model(api, raw, model_id="m")

    assert_refused(response, 400)
    assert not canary.exists()
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
@pytest.mark.parametrize("carrier", ["base64", "latin-1", "file-part"])
def test_a_pickle_as_inference_data_is_refused(api, hosted, canary, data_dir, payload, carrier):
    raw = payloads(canary)[payload]
    before = stored_state(data_dir)
    if carrier == "file-part":
        response = api.post("/model/mlp", {"data": io.BytesIO(raw)}, format="multipart")
    else:
        text = base64.b64encode(raw).decode() if carrier == "base64" else raw.decode("latin-1")
        response = api.post("/model/mlp", {"encoding": carrier, "data": text}, format="json")

    assert_refused(response, 400)
    assert not canary.exists()
    assert stored_state(data_dir) == before


@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
@pytest.mark.parametrize("carrier", ["base64", "latin-1", "file-part"])
def test_a_pickle_as_a_dataset_is_refused(api, canary, data_dir, payload, carrier):
    raw = payloads(canary)[payload]
    if carrier == "file-part":
        response = api.post("/datasets", {"id": "d", "tags": ["t"], "data": io.BytesIO(raw)}, format="multipart")
    else:
        text = base64.b64encode(raw).decode() if carrier == "base64" else raw.decode("latin-1")
        body = {"id": "d", "tags": ["t"], "encoding": carrier, "data": text}
        response = api.post("/datasets", body, format="json")

    assert_refused(response, 400)
    assert not canary.exists()
    assert_nothing_stored(data_dir)


def test_a_pickle_as_v2_binary_data_is_only_ever_bytes(api, hosted, canary, data_dir):
    """The binary tensor extension reads raw element bytes: a pickle there is numbers, never unpickled."""
    raw = pickle.dumps(WritesCanary(canary))
    header = (
        b'{"inputs": [{"name": "input__0", "shape": [1, %d], "datatype": "UINT8", '
        b'"parameters": {"binary_data_size": %d}}]}' % (len(raw), len(raw))
    )
    before = stored_state(data_dir)

    response = api.generic(
        "POST",
        "/v2/models/mlp/infer",
        header + raw,
        content_type="application/octet-stream",
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(len(header)),
    )

    assert "does not fit the model" in assert_refused(response, 400)
    assert not canary.exists()
    assert stored_state(data_dir) == before


@pytest.mark.parametrize("member", ["data.pkl", "payload.pkl", "model.pt"])
def test_a_zip_whose_member_is_a_pickle_is_refused(api, canary, data_dir, member):
    archive = zip_of({f"archive/{member}": pickle.dumps(WritesCanary(canary))})

    response = upload_model(api, archive)

    assert "neither a TorchScript archive nor a torch.export archive" in assert_refused(response)
    assert not canary.exists()
    assert_nothing_stored(data_dir)


def test_a_jit_archive_with_an_extra_pickle_member_is_refused(api, mlp_jit, canary, data_dir):
    """torch would never read it, but the node reads every pickle of an archive before torch does."""
    entries = zip_entries(mlp_jit)
    root = entry_name(entries, "/data.pkl").split("/")[0]
    entries[f"{root}/extra/payload.pkl"] = pickle.dumps(WritesCanary(canary), protocol=2)

    response = upload_model(api, zip_of(entries))

    assert assert_refused(response) == "The TorchScript archive's pickles name a global this node does not load."
    assert not canary.exists()
    assert_nothing_stored(data_dir)


def test_a_torch_save_zip_of_a_pickle_as_a_model_is_refused(api, canary, data_dir):
    """torch.save's own zip (data.pkl, no code/): not a model archive, and never loaded as one."""
    response = upload_model(api, torch_saved({"state": WritesCanary(canary)}))

    assert "neither a TorchScript archive nor a torch.export archive" in assert_refused(response)
    assert not canary.exists()
    assert_nothing_stored(data_dir)
