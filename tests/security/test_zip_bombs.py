"""Zip bombs: archives and tensors whose entries unpack to far more than their size, lie about their
sizes, nest zips, or hold thousands of entries. Refused from the zip directory, before torch reads them."""

import base64
import io
import struct
import zipfile

import pytest
import torch

from tests.conftest import saved_tensor
from tests.security.conftest import (
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

ZEROS = b"\x00" * (32 * 1024 * 1024)  # 32 MiB that deflate to 32 KiB


def deflated(entries: dict[str, bytes]) -> bytes:
    return zip_of(entries, compression=zipfile.ZIP_DEFLATED)


def with_extra_entry(archive: bytes, name: str, content: bytes) -> bytes:
    entries = zip_entries(archive)
    root = next(iter(entries)).split("/")[0]
    entries[f"{root}/{name}"] = content
    return deflated(entries)


def test_a_model_archive_that_unpacks_to_far_more_than_its_size_is_refused(api, mlp_jit, data_dir):
    bomb = with_extra_entry(mlp_jit, "data/99", ZEROS)
    assert len(bomb) < 100 * 1024

    response = upload_model(api, bomb)

    assert "The model archive unpacks to" in assert_refused(response)
    assert_nothing_stored(data_dir)


def test_a_plan_that_unpacks_to_far_more_than_its_size_is_refused(api, mlp_plan, data_dir):
    response = upload_model(api, with_extra_entry(mlp_plan, "data/weights/weight_99", ZEROS))

    assert "The model archive unpacks to" in assert_refused(response)
    assert_nothing_stored(data_dir)


def test_an_archive_is_refused_when_it_unpacks_past_the_model_size_limit(api, settings, mlp_jit, data_dir):
    """Within the ratio (10x of 1 MiB), but over what the node takes as a model at all."""
    settings.GRIDNODE_MAX_MODEL_BYTES = 2 * 1024 * 1024
    bomb = with_extra_entry(mlp_jit, "data/99", b"\x00" * (5 * 1024 * 1024))

    response = upload_model(api, bomb)

    assert "(2097152)" in assert_refused(response)
    assert_nothing_stored(data_dir)


def lying_about_its_size(archive: bytes, name_suffix: str, content: bytes) -> bytes:
    """A deflated entry whose headers say it unpacks to 10 bytes, while it unpacks to `content`."""
    entries = zip_entries(archive)
    name = entry_name(entries, name_suffix)
    entries[name] = content
    raw = bytearray(deflated(entries))
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as parsed:
        local_header = parsed.getinfo(name).header_offset
    struct.pack_into("<I", raw, local_header + 22, 10)  # the local header's uncompressed size
    record = raw.index(b"PK\x01\x02")
    while raw[record + 46 : record + 46 + len(name)] != name.encode():
        record = raw.index(b"PK\x01\x02", record + 4)
    struct.pack_into("<I", raw, record + 24, 10)  # the central directory's uncompressed size
    return bytes(raw)


def test_an_entry_that_unpacks_past_its_declared_size_is_not_read_past_it(api, mlp_jit, data_dir):
    code = b"def forward(self, x):\n    return x\n" + b"#" * (32 * 1024 * 1024)
    archive = lying_about_its_size(mlp_jit, "code/__torch__/torch/nn/modules/container.py", code)

    response = upload_model(api, archive)

    assert assert_refused(response) == "The model is not a readable zip archive."
    assert_nothing_stored(data_dir)


def test_a_zip_holding_a_zip_bomb_is_refused_without_opening_it(api, data_dir):
    inner = deflated({f"layer{i}.bin": ZEROS for i in range(4)})  # 128 MiB inside ~130 KiB
    outer = zip_of({"archive/inner.zip": inner, "archive/data.pkl": b"\x80\x02N."})

    response = upload_model(api, outer)

    assert assert_refused(response) == "The zip file is neither a TorchScript archive nor a torch.export archive."
    assert_nothing_stored(data_dir)


def test_a_plan_whose_sample_inputs_are_a_zip_bomb_is_refused(api, mlp_plan, data_dir):
    """The sample inputs are a torch.save zip inside the archive; torch.load would unpack it."""
    entries = zip_entries(mlp_plan)
    sample = entry_name(entries, "data/sample_inputs/model.pt")
    entries[sample] = deflated(zip_entries(torch_saved(((torch.zeros(8 * 1024 * 1024),), {}))))

    response = upload_model(api, zip_of(entries))

    assert "sample inputs unpacks to" in assert_refused(response)
    assert_nothing_stored(data_dir)


def test_a_zip_with_thousands_of_entries_is_refused(api, mlp_jit, data_dir):
    entries = zip_entries(mlp_jit)
    root = next(iter(entries)).split("/")[0]
    entries |= {f"{root}/extra/{index}": b"" for index in range(10_001)}

    response = upload_model(api, zip_of(entries))

    assert "more entries than this node reads" in assert_refused(response)
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize(("offset", "value"), [(10, 60_000), (12, 1 << 30)], ids=["entry-count", "directory-size"])
def test_a_zip_whose_directory_claims_too_much_is_refused_before_it_is_parsed(api, mlp_jit, data_dir, offset, value):
    raw = bytearray(mlp_jit)
    end = raw.rindex(b"PK\x05\x06")
    struct.pack_into("<H" if offset == 10 else "<I", raw, end + offset, value)

    response = upload_model(api, bytes(raw))

    assert "more entries than this node reads" in assert_refused(response)
    assert_nothing_stored(data_dir)


def test_a_zip_with_two_entries_of_one_name_is_refused(api, mlp_jit, data_dir):
    """Python's zipfile reads the last of two same-named entries; another reader may read the first."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(mlp_jit)) as source, zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
        code = next(name for name in source.namelist() if name.endswith(".py"))
        with pytest.warns(UserWarning, match="Duplicate name"):
            target.writestr(code, b"def __setstate__(self, state):\n    pass\n")

    response = upload_model(api, buffer.getvalue())

    assert assert_refused(response) == "The model archive holds two entries with the same name."
    assert_nothing_stored(data_dir)


def test_a_zip_compressed_in_a_way_torch_does_not_read_is_refused(api, mlp_jit, data_dir):
    entries = zip_entries(mlp_jit)

    response = upload_model(api, zip_of(entries, compression=zipfile.ZIP_BZIP2))

    assert "compressed in a way torch does not read" in assert_refused(response)
    assert_nothing_stored(data_dir)


def tensor_bomb() -> bytes:
    """torch.save bytes of 32 MiB of zeros, deflated to a few KiB."""
    return deflated(zip_entries(torch_saved(torch.zeros(8 * 1024 * 1024))))


def test_inference_data_that_unpacks_to_far_more_than_its_size_is_refused(api, hosted, data_dir):
    before = stored_state(data_dir)
    body = {"encoding": "base64", "data": base64.b64encode(tensor_bomb()).decode()}

    response = api.post("/model/mlp", body, format="json")

    assert "'data' unpacks to" in assert_refused(response)
    assert stored_state(data_dir) == before


@pytest.mark.parametrize("form", ["json", "multipart"])
def test_a_dataset_that_unpacks_to_far_more_than_its_size_is_refused(api, data_dir, form):
    bomb = tensor_bomb()
    if form == "json":
        body = {"id": "bomb", "tags": ["t"], "encoding": "base64", "data": base64.b64encode(bomb).decode()}
    else:
        body = {"id": "bomb", "tags": ["t"], "data": io.BytesIO(bomb)}

    response = api.post("/datasets", body, format=form)

    assert "'data' unpacks to" in assert_refused(response)
    assert_nothing_stored(data_dir)


def test_a_dataset_is_refused_when_it_unpacks_past_the_dataset_size_limit(api, settings, data_dir):
    settings.GRIDNODE_MAX_DATASET_BYTES = 2 * 1024 * 1024
    bomb = deflated(zip_entries(torch_saved(torch.zeros(1024 * 1024))))  # 4 MiB in a few KiB

    response = api.post("/datasets", {"id": "bomb", "tags": ["t"], "data": io.BytesIO(bomb)}, format="multipart")

    assert "(2097152)" in assert_refused(response)
    assert_nothing_stored(data_dir)


def test_a_tensor_deflated_by_a_client_within_bounds_still_loads(api, data_dir):
    """Deflate itself is fine: torch reads it, and a tensor of random numbers barely shrinks."""
    deflated_tensor = deflated(zip_entries(saved_tensor([[1.0, 2.0], [3.0, 4.0]])))

    response = api.post(
        "/datasets", {"id": "ok", "tags": ["t"], "data": io.BytesIO(deflated_tensor)}, format="multipart"
    )

    assert response.status_code == 201, response.json()
    assert response.json()["shape"] == [2, 2]
