"""Hostile archives: nothing a client sends is unpickled, so a payload never runs on the node."""

import base64
import io
import json
import pickle
import zipfile

import pytest
import torch

from models_app.models import HostedModel

pytestmark = pytest.mark.django_db


class WritesCanary:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def entries_of(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        return {name: source.read(name) for name in source.namelist()}


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def entry(entries, suffix):
    return next(name for name in entries if name.endswith(suffix))


def upload(api, archive: bytes):
    body = {"model_id": "hostile", "encoding": "base64", "model": base64.b64encode(archive).decode()}
    return api.post("/serve-model", body, format="json")


def torch_saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def test_a_plan_with_pickled_sample_inputs_is_refused_without_running_them(api, mlp_plan, tmp_path):
    canary = tmp_path / "canary"
    entries = entries_of(mlp_plan)
    entries[entry(entries, "data/sample_inputs/model.pt")] = torch_saved(WritesCanary(canary))

    response = upload(api, zip_of(entries))

    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": "The torch.export archive's sample inputs are not plain tensors.",
    }
    assert not canary.exists()
    assert HostedModel.objects.count() == 0


def test_a_plan_with_a_pickled_weight_is_refused(api, mlp_plan, tmp_path):
    canary = tmp_path / "canary"
    entries = entries_of(mlp_plan)
    config_name = entry(entries, "model_weights_config.json")
    config = json.loads(entries[config_name])
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    entries[config_name] = json.dumps(config).encode()
    entries[entry(entries, f"data/weights/{first['path_name']}")] = torch_saved(WritesCanary(canary))

    response = upload(api, zip_of(entries))

    assert response.status_code == 400
    assert "pickled objects" in response.json()["error"]
    assert not canary.exists()


def test_a_plan_with_an_opaque_constant_is_refused(api, mlp_plan, tmp_path):
    canary = tmp_path / "canary"
    entries = entries_of(mlp_plan)
    config_name = entry(entries, "model_constants_config.json")
    root = config_name.split("/")[0]
    entries[config_name] = json.dumps(
        {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False}}}
    ).encode()
    entries[f"{root}/data/constants/opaque_obj_0"] = pickle.dumps(WritesCanary(canary))

    response = upload(api, zip_of(entries))

    assert response.status_code == 400
    assert "custom or opaque objects" in response.json()["error"]
    assert not canary.exists()


def test_a_plan_with_an_unexpected_entry_is_refused(api, mlp_plan):
    entries = entries_of(mlp_plan)
    root = next(iter(entries)).split("/")[0]
    entries[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF"

    response = upload(api, zip_of(entries))

    assert response.status_code == 400
    assert response.json()["error"].endswith("data/aotinductor/model/model.so")


def test_a_plan_with_a_missing_weight_is_refused(api, mlp_plan):
    entries = entries_of(mlp_plan)
    del entries[entry(entries, "data/weights/weight_0")]

    response = upload(api, zip_of(entries))

    assert response.status_code == 400
    assert "missing" in response.json()["error"]


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        # Protocol 2 names `io open` with GLOBAL, as TorchScript's own pickler names its globals...
        (2, "The TorchScript archive's pickles name a global this node does not load."),
        # ...later protocols with STACK_GLOBAL, which TorchScript never writes.
        (4, "The TorchScript archive holds a pickle that TorchScript does not write."),
    ],
)
def test_a_jit_archive_with_a_foreign_global_is_refused_before_loading(api, mlp_jit, tmp_path, protocol, message):
    canary = tmp_path / "canary"
    entries = entries_of(mlp_jit)
    entries[entry(entries, "/data.pkl")] = pickle.dumps(WritesCanary(canary), protocol=protocol)

    response = upload(api, zip_of(entries))

    assert response.status_code == 400
    assert response.json() == {"success": False, "error": message}
    assert not canary.exists()
    assert HostedModel.objects.count() == 0


def test_a_jit_archive_with_an_unreadable_pickle_is_refused(api, mlp_jit):
    entries = entries_of(mlp_jit)
    entries[entry(entries, "/constants.pkl")] = b"\x80\x02\xff not a pickle"

    response = upload(api, zip_of(entries))

    assert response.status_code == 400
    assert response.json() == {"success": False, "error": "The TorchScript archive holds a pickle that cannot be read."}


def test_a_jit_archive_saved_by_torch_passes_the_pickle_check(api, mlp_jit):
    response = upload(api, mlp_jit)

    assert response.status_code == 200
    assert HostedModel.objects.filter(model_id="hostile", kind="jit").exists()


def test_a_raw_pickle_as_model_is_refused(api, tmp_path):
    canary = tmp_path / "canary"
    response = upload(api, pickle.dumps(WritesCanary(canary)))

    assert response.status_code == 400
    assert "not a zip file" in response.json()["error"]
    assert not canary.exists()


def test_a_hostile_plan_checked_in_an_inference_process_runs_nothing(api, mlp_plan, tmp_path):
    canary = tmp_path / "canary"
    entries = entries_of(mlp_plan)
    entries[entry(entries, "data/sample_inputs/model.pt")] = torch_saved(WritesCanary(canary))

    response = upload(api, zip_of(entries))

    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": "The torch.export archive's sample inputs are not plain tensors.",
    }
    assert not canary.exists()
