"""`manage.py storage_check`: stored files no row claims, stale staged uploads, rows whose file is gone."""

import base64
import io
import os
import time

import pytest
import torch
from django.core.management import CommandError, call_command

from datasets_app.models import Dataset
from models_app.models import HostedModel
from tests.reliability.helpers import files_in, saved

pytestmark = pytest.mark.django_db(transaction=True)

TWO_HOURS = 2 * 3600


def run_check(*args: str) -> tuple[int, str]:
    """The command's exit code and everything it said."""
    out = io.StringIO()
    try:
        call_command("storage_check", *args, stdout=out)
    except CommandError as exc:
        return 1, out.getvalue() + f"CommandError: {exc}\n"
    return 0, out.getvalue()


def put(path, content: bytes = b"x", *, age: float = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


@pytest.fixture
def stored(api, serve, mlp_jit, data_dir):
    """A model and a dataset, stored the normal way hours ago (so old enough to be judged)."""
    serve("kept", mlp_jit, allow_remote_inference=True)
    body = {"id": "rows", "encoding": "base64", "data": base64.b64encode(saved(torch.ones(2, 2))).decode()}
    assert api.post("/datasets", body, format="json").status_code == 201
    names = {
        "model": HostedModel.objects.get(model_id="kept").archive.name,
        "dataset": Dataset.objects.get(dataset_id="rows").data.name,
    }
    for name in names.values():
        path = data_dir / "files" / name
        put(path, path.read_bytes(), age=TWO_HOURS)
    return names


@pytest.fixture
def litter(stored, serve, mlp_jit, data_dir):
    """What crashes leave: files no row claims (old and new), staged uploads (stale and in flight), and a
    row whose file was lost."""
    serve("lost", mlp_jit)
    lost = HostedModel.objects.get(model_id="lost").archive.name
    (data_dir / "files" / lost).unlink()
    return {
        "orphan": put(data_dir / "files" / "models" / "0123abcd.pt", b"\0" * 2048, age=TWO_HOURS),
        "probe": put(data_dir / "files" / "readiness-probe-5f.tmp", age=TWO_HOURS),
        "young orphan": put(data_dir / "files" / "datasets" / "4567ef.pt"),
        "stale staged": put(data_dir / "tmp" / "tmpk2l.upload.part", b"\0" * 4096, age=TWO_HOURS),
        "staged now": put(data_dir / "tmp" / "tmpq9z.upload"),
        "lost": lost,
    }


def test_a_consistent_node_passes(stored, data_dir):
    put(data_dir / "tmp" / "tmpnow.upload")  # an upload in flight is nobody's business

    code, said = run_check()

    assert code == 0, said
    assert said == (
        "Checked 2 stored files against 2 rows, and the staging folder: 0 orphan files found, 0 stale staged "
        "uploads found, 0 rows without their file; 0 files younger than 3600 s left alone.\n"
    )


def test_a_node_that_stored_nothing_yet_passes(data_dir):
    assert run_check()[0] == 0


def test_it_reports_what_it_finds_and_changes_nothing(litter, stored, data_dir):
    before = files_in(data_dir)

    code, said = run_check()

    assert code == 1
    lines = said.splitlines()
    assert "Orphan file models/0123abcd.pt (2,048 bytes, 2.0 h old): no row refers to it" in lines
    assert "Orphan file readiness-probe-5f.tmp (1 bytes, 2.0 h old): no row refers to it" in lines
    assert f"Stale staged upload {litter['stale staged']} (4,096 bytes, 2.0 h old)" in lines
    assert f"Missing file for model 'lost': {litter['lost']}" in lines
    assert not any("4567ef" in line or "tmpq9z" in line for line in lines)
    assert lines[-2] == (
        "Checked 5 stored files against 3 rows, and the staging folder: 2 orphan files found, 1 stale staged "
        "uploads found, 1 rows without their file; 1 files younger than 3600 s left alone."
    )
    assert lines[-1] == (
        "CommandError: 4 problems (--delete removes the files); a row without its file needs an operator: "
        "delete that model or dataset, or restore it."
    )
    assert files_in(data_dir) == before
    assert HostedModel.objects.count() == 2


def test_delete_removes_old_orphans_and_stale_staged_uploads_only(api, litter, stored, data_dir):
    code, said = run_check("--delete")

    assert code == 1  # the row without its file stays, for an operator
    assert "Orphan file models/0123abcd.pt (2,048 bytes, 2.0 h old): no row refers to it: removed" in said
    assert "2 orphan files removed, 1 stale staged uploads removed, 1 rows without their file" in said
    assert not litter["orphan"].exists()
    assert not litter["probe"].exists()
    assert not litter["stale staged"].exists()
    assert litter["young orphan"].exists()
    assert litter["staged now"].exists()
    assert files_in(data_dir / "files") == sorted([stored["dataset"], stored["model"], "datasets/4567ef.pt"])
    assert HostedModel.objects.count() == 2
    assert api.post("/model/kept", {"data": [[1, 2, 3, 4]]}, format="json").status_code == 200
    assert api.get("/datasets/rows").status_code == 200

    # The operator deletes the model whose file was lost: nothing is left to report.
    assert api.post("/delete-model", {"model_id": "lost"}, format="json").status_code == 200
    code, said = run_check("--delete")
    assert code == 0, said


def test_min_age_zero_judges_every_file(litter, data_dir):
    code, said = run_check("--delete", "--min-age", "0")

    assert "3 orphan files removed, 2 stale staged uploads removed" in said
    assert not litter["young orphan"].exists()
    assert files_in(data_dir / "tmp") == []


def test_a_negative_min_age_is_refused(data_dir):
    code, said = run_check("--min-age", "-1")
    assert code == 1
    assert said == "CommandError: --min-age must be 0 or more seconds.\n"
