"""`manage.py load_datasets`: a folder of .pt files becomes tagged datasets, through the API's rules."""

import pytest
import torch
from django.core.management import CommandError, call_command

from datasets_app.models import Dataset
from tests.datasets_app.helpers import staged_files

pytestmark = pytest.mark.django_db


def run(*args) -> tuple[str, str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    call_command("load_datasets", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "tensors"
    path.mkdir()
    torch.save(torch.rand(4, 3), path / "train.pt")
    torch.save(torch.arange(5), path / "labels.PT")
    torch.save([torch.ones(1), torch.ones(1)], path / "pair.pt")
    (path / "broken.pt").write_bytes(b"not a tensor")
    (path / "bad name!.pt").write_bytes(b"")
    torch.save(torch.ones(1), path / "ignored.pt2")
    (path / "notes.txt").write_text("not a .pt file")
    (path / "sub.pt").mkdir()
    return path


def test_it_loads_every_tensor_and_reports_what_it_skipped(api, folder, data_dir):
    out, err = run(str(folder), "--tag", "#mnist", "--tag", "#bulk", "--description", "loaded", "--allow-download")

    assert sorted(Dataset.objects.values_list("dataset_id", flat=True)) == ["labels", "train"]
    train = Dataset.objects.get(dataset_id="train")
    assert (train.shape, train.dtype, train.description, train.allow_download) == ([4, 3], "float32", "loaded", True)
    assert train.tag_names() == ["#bulk", "#mnist"]
    assert train.data.read() == (folder / "train.pt").read_bytes()
    assert Dataset.objects.get(dataset_id="labels").dtype == "int64"
    assert "Loaded labels: int64 [5]" in out
    assert "Loaded train: float32 [4, 3]" in out
    assert "2 loaded, 3 skipped, from 5 .pt files" in out
    assert "Skipped bad name!.pt: 'id' must be" in err
    assert "Skipped broken.pt: 'data' is not a tensor" in err
    assert "Skipped pair.pt: 'data' must hold one tensor" in err
    # The operator's files stay where they were; nothing is left in staging.
    assert (folder / "train.pt").exists()
    assert staged_files(data_dir) == []
    assert api.post("/search", {"query": ["#mnist", "train"]}, format="json").json() == {"content": True}


def test_a_second_run_skips_the_ids_already_taken(folder):
    run(str(folder), "--tag", "#first")
    out, err = run(str(folder), "--tag", "#second")

    assert "0 loaded, 5 skipped" in out
    assert "Skipped train.pt: Dataset with id: train already exists." in err
    assert Dataset.objects.get(dataset_id="train").tag_names() == ["#first"]


def test_defaults_are_no_tags_no_description_and_private(folder):
    run(str(folder))
    train = Dataset.objects.get(dataset_id="train")
    assert (train.tag_names(), train.description, train.allow_download) == ([], "", False)


def test_bad_tags_stop_it_before_loading_anything(folder):
    with pytest.raises(CommandError, match="Tags are 1-100 characters long"):
        run(str(folder), "--tag", "x" * 101)
    assert Dataset.objects.count() == 0


def test_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(CommandError, match="is not a folder"):
        run(str(tmp_path / "nowhere"))
