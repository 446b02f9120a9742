"""POST /datasets: every body form, the tag rules, and every refusal leaving no row and no file behind."""

import base64
import hashlib
import io
import json
from urllib.parse import urlencode

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets_app.models import Dataset, Tag
from tests.api_cases import BodyIdRuleCases, with_id
from tests.datasets_app.helpers import DatasetCases, saved, staged_files, stored_files

pytestmark = pytest.mark.django_db


class TestIdCases(DatasetCases, BodyIdRuleCases):
    """The id rule on upload (an id left out is made up: test_without_an_id_it_makes_up_a_uuid)."""

    method = "post"
    path = "/datasets"
    effect = "creates"
    ok_status = 201
    id_in_answer = "id"

    def body(self, object_id):
        return with_id({"tags": ["#t"], "data": [1.0]}, "id", object_id)


def assert_nothing_stored(data_dir):
    assert Dataset.objects.count() == 0
    assert stored_files(data_dir) == []
    assert staged_files(data_dir) == []


def test_it_stores_a_tensor_sent_as_latin1_text(api, data_dir):
    tensor = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    raw = saved(tensor)
    body = {
        "id": "mnist-train",
        "tags": ["#mnist", "#train"],
        "description": "Handwritten digits",
        "allow_download": True,
        "encoding": "ISO-8859-1",
        "data": raw.decode("latin-1"),
    }
    response = api.post("/datasets", body, format="json")

    assert response.status_code == 201
    answer = response.json()
    assert {key: answer[key] for key in ["id", "tags", "description", "shape", "dtype", "size", "allow_download"]} == {
        "id": "mnist-train",
        "tags": ["#mnist", "#train"],
        "description": "Handwritten digits",
        "shape": [3, 4],
        "dtype": "float64",
        "size": len(raw),
        "allow_download": True,
    }
    assert answer["sha256"] == hashlib.sha256(raw).hexdigest()
    dataset = Dataset.objects.get(dataset_id="mnist-train")
    assert (dataset.shape, dataset.dtype, dataset.size, dataset.allow_download) == ([3, 4], "float64", len(raw), True)
    assert dataset.data.read() == raw
    assert dataset.tag_names() == ["#mnist", "#train"]
    assert stored_files(data_dir) == [dataset.data.name.split("/")[-1]]
    assert staged_files(data_dir) == []


def test_it_stores_a_tensor_sent_as_base64_with_the_alias_spelling(api):
    raw = saved(torch.ones(2, dtype=torch.int32))
    body = {"id": "b64", "encoding": "base64", "data": base64.b64encode(raw).decode(), "tags": ["#x"]}
    response = api.post("/datasets/", body, format="json")

    assert response.status_code == 201
    assert Dataset.objects.get(dataset_id="b64").dtype == "int32"
    body = {"id": "latin", "encoding": "latin1", "data": raw.decode("latin-1")}
    assert api.post("/datasets", body, format="json").status_code == 201


def test_it_stores_a_plain_json_array_as_float32_by_default(api):
    response = api.post("/datasets", {"id": "plain", "tags": ["#a"], "data": [[1, 2, 3], [4, 5, 6]]}, format="json")

    assert response.status_code == 201
    assert (response.json()["shape"], response.json()["dtype"]) == ([2, 3], "float32")
    stored = torch.load(Dataset.objects.get(dataset_id="plain").data.open("rb"), weights_only=True)
    assert torch.equal(stored, torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))


def test_a_json_array_takes_a_dtype(api):
    response = api.post("/datasets", {"id": "labels", "data": [3, 1, 4], "dtype": "int64"}, format="json")

    assert response.status_code == 201
    assert response.json()["dtype"] == "int64"
    stored = torch.load(Dataset.objects.get(dataset_id="labels").data.open("rb"), weights_only=True)
    assert stored.dtype == torch.int64
    assert stored.tolist() == [3, 1, 4]


def test_a_scalar_is_a_zero_dimensional_tensor(api):
    response = api.post("/datasets", {"id": "scalar", "data": 2.5}, format="json")

    assert response.status_code == 201
    assert response.json()["shape"] == []


def test_it_accepts_a_multipart_file_part_with_repeated_tag_fields(api, data_dir):
    raw = saved(torch.rand(5, 2))
    body = {
        "id": "multi",
        "data": SimpleUploadedFile("x.pt", raw, content_type="application/octet-stream"),
        "tags": ["#b", "#a", "#b"],
        "allow_download": "True",
        "description": "from a form",
    }
    response = api.post("/datasets", body, format="multipart")

    assert response.status_code == 201
    assert response.json()["tags"] == ["#a", "#b"]
    dataset = Dataset.objects.get(dataset_id="multi")
    assert (dataset.shape, dataset.allow_download, dataset.description) == ([5, 2], True, "from a form")
    assert dataset.data.read() == raw
    assert staged_files(data_dir) == []


def test_it_streams_a_large_multipart_upload_through_disk(api, settings, data_dir):
    # Past this size Django writes the part to a temp file; the node moves that file into storage.
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    raw = saved(torch.rand(64, 64))
    response = api.post("/datasets", {"id": "big", "data": SimpleUploadedFile("x.pt", raw)}, format="multipart")

    assert response.status_code == 201
    dataset = Dataset.objects.get(dataset_id="big")
    assert dataset.data.read() == raw
    assert dataset.sha256 == hashlib.sha256(raw).hexdigest()
    assert staged_files(data_dir) == []


def test_it_accepts_a_form_encoded_body(api):
    raw = saved(torch.zeros(3))
    body = urlencode(
        {"id": "form", "encoding": "latin-1", "data": raw.decode("latin-1"), "tags": "#f", "allow_download": "1"}
    )
    response = api.post("/datasets", body, content_type="application/x-www-form-urlencoded")

    assert response.status_code == 201
    dataset = Dataset.objects.get(dataset_id="form")
    assert (dataset.tag_names(), dataset.allow_download) == (["#f"], True)
    body = urlencode({"id": "form-json", "data": json.dumps([[1, 2]])})
    response = api.post("/datasets", body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 201
    assert response.json()["shape"] == [1, 2]


def test_without_an_id_it_makes_up_a_uuid(api):
    response = api.post("/datasets", {"tags": ["#anon"], "data": [1.0]}, format="json")

    assert response.status_code == 201
    dataset_id = response.json()["id"]
    assert len(dataset_id) == 36
    assert dataset_id.count("-") == 4
    assert Dataset.objects.get().dataset_id == dataset_id
    assert Dataset.objects.get().allow_download is False


def test_tags_are_optional_and_duplicates_collapse(api, upload):
    assert upload("untagged")["tags"] == []
    assert upload("dups", tags=["#z", "#a", "#z", "#a"])["tags"] == ["#a", "#z"]
    assert list(Tag.objects.values_list("name", flat=True)) == ["#a", "#z"]


def test_tags_are_sorted_by_code_point_whatever_the_collation(upload):
    tags = ["b", "B", "a", "Z", "é", "É", "_", "#z", "日本", "\U0001f600"]
    answer = upload("mixed", tags=tags)

    assert answer["tags"] == sorted(tags)
    assert Dataset.objects.get(dataset_id="mixed").tag_names() == sorted(tags)


def test_unicode_tags_round_trip(api, upload):
    tags = ["#données", "#日本語", "#😀", "#" + "ß" * 99]
    upload("unicode", tags=tags)

    assert sorted(Dataset.objects.get(dataset_id="unicode").tag_names()) == sorted(tags)
    assert api.get("/datasets/unicode").json()["tags"] == sorted(tags)


def test_tags_are_case_sensitive_and_shared_between_datasets(upload):
    upload("one", tags=["#MNIST", "#shared"])
    upload("two", tags=["#mnist", "#shared"])

    assert sorted(Tag.objects.values_list("name", flat=True)) == ["#MNIST", "#mnist", "#shared"]
    assert Tag.objects.get(name="#shared").datasets.count() == 2


def test_it_refuses_a_duplicate_id_and_keeps_the_first_dataset(api, upload, data_dir):
    upload("dup", tags=["#first"], description="first")
    before = stored_files(data_dir)
    response = api.post("/datasets", {"id": "dup", "tags": ["#second"], "data": [9.0]}, format="json")

    assert response.status_code == 409
    assert response.json() == {"error": "Dataset with id: dup already exists."}
    dataset = Dataset.objects.get(dataset_id="dup")
    assert (dataset.description, dataset.tag_names(), dataset.shape) == ("first", ["#first"], [2, 2])
    assert stored_files(data_dir) == before
    assert staged_files(data_dir) == []
    assert not Tag.objects.filter(name="#second").exists()


def test_it_refuses_ten_thousand_tags_with_the_stated_limit(api, data_dir):
    tags = [f"#tag-{number}" for number in range(10_000)]
    response = api.post("/datasets", {"id": "many", "tags": tags, "data": [1.0]}, format="json")

    assert response.status_code == 400
    assert response.json() == {"error": "A dataset takes at most 100 distinct tags; this one has 10000."}
    assert Tag.objects.count() == 0
    assert_nothing_stored(data_dir)


def test_the_tag_limit_counts_distinct_tags_and_follows_the_setting(api, settings, upload):
    assert len(upload("hundred", tags=[f"#{n}" for n in range(100)] * 3)["tags"]) == 100
    settings.GRIDNODE_MAX_TAGS_PER_DATASET = 2
    response = api.post("/datasets", {"tags": ["#a", "#b", "#c"], "data": [1.0]}, format="json")
    assert response.status_code == 400
    assert "at most 2 distinct tags" in response.json()["error"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tags": "#not-a-list"}, "'tags' must be a list of strings."),
        ({"tags": ["#ok", 3]}, "'tags' must be a list of strings."),
        ({"tags": [""]}, "Tags are 1-100 characters long; tag 1 is 0."),
        ({"tags": ["#ok", "x" * 101]}, "Tags are 1-100 characters long; tag 2 is 101."),
        ({"tags": ["new\nline"]}, "Tags must not contain control characters; tag 1 does."),
        ({"tags": ["tab\there"]}, "control characters"),
        ({"tags": ["nul\x00"]}, "control characters"),
        ({"tags": ["bell\x07"]}, "control characters"),
        ({"tags": ["del\x7f"]}, "control characters"),
        ({"tags": ["c1\x85"]}, "control characters"),
        ({"description": ["not", "text"]}, "'description' must be text."),
        ({"description": "x" * 10_001}, "longer than 10000 characters"),
        ({"description": "nul\x00"}, "NUL characters"),
        ({"allow_download": "yes"}, "'allow_download' must be true or false."),
        ({"data": None}, "'data' is required."),
        ({"data": ""}, "'data' is required."),
        ({"data": [[1, 2], [3]]}, "rectangular"),
        ({"data": [True, False]}, "not booleans"),
        ({"data": {"a": 1}}, "JSON array of numbers"),
        ({"data": "some text"}, "neither a JSON array nor text under an 'encoding'"),
        ({"data": [1.5], "dtype": "int64"}, "numbers with a fraction"),
        ({"data": [1], "dtype": "tensor"}, "'dtype' must be a torch dtype"),
        ({"data": [1], "dtype": "complex64"}, "'data' as a JSON array takes a 'dtype' among"),
        ({"data": [300], "dtype": "uint8"}, "rectangular"),
        ({"encoding": "rot13", "data": "abc"}, "Unknown encoding"),
        ({"encoding": "base64", "data": "***"}, "not valid base64"),
        ({"encoding": "latin-1", "data": "\u0394 not latin-1"}, "outside ISO-8859-1"),
        ({"encoding": "latin-1", "data": ["not", "text"]}, "'data' must be text under the ISO-8859-1 encoding."),
        ({"encoding": "latin-1", "data": "not a torch file"}, "not a tensor saved with torch.save"),
    ],
)
def test_it_refuses_bad_fields_and_stores_nothing(api, data_dir, change, message):
    body = {"id": "d1", "tags": ["#ok"], "data": [[1.0, 2.0]], **change}
    body = {key: value for key, value in body.items() if value is not None}
    response = api.post("/datasets", body, format="json")

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert Tag.objects.count() == 0
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([torch.ones(2), torch.zeros(2)], "one tensor, not a collection of tensors"),
        ((torch.ones(2),), "one tensor, not a collection of tensors"),
        ({"weight": torch.ones(2)}, "one tensor, not a collection of tensors"),
        (3, "must hold a tensor"),
        (torch.eye(3).to_sparse(), "dense tensor"),
        (torch.zeros(2, device="meta"), "dense tensor"),
    ],
)
def test_it_refuses_anything_but_one_dense_tensor(api, data_dir, value, message):
    body = {"id": "d1", "encoding": "latin-1", "data": saved(value).decode("latin-1")}
    response = api.post("/datasets", body, format="json")

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert_nothing_stored(data_dir)


def test_it_never_unpickles_arbitrary_objects(api, data_dir, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    body = {"id": "evil", "encoding": "latin-1", "data": saved(Exploit()).decode("latin-1")}
    response = api.post("/datasets", body, format="json")

    assert response.status_code == 400
    assert not marker.exists()
    assert_nothing_stored(data_dir)


def test_a_dtype_must_agree_with_a_serialized_tensor(api, data_dir):
    raw = saved(torch.ones(2, dtype=torch.float64))
    body = {"id": "d1", "encoding": "latin-1", "data": raw.decode("latin-1"), "dtype": "float32"}
    response = api.post("/datasets", body, format="json")

    assert response.status_code == 400
    assert response.json() == {"error": "'dtype' says float32 but the tensor is float64."}
    assert_nothing_stored(data_dir)
    body["dtype"] = "torch.double"
    assert api.post("/datasets", body, format="json").status_code == 201


def test_an_empty_multipart_file_is_refused(api, data_dir):
    response = api.post("/datasets", {"id": "e", "data": SimpleUploadedFile("x.pt", b"")}, format="multipart")

    assert response.status_code == 400
    assert response.json() == {"error": "'data' is empty."}
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize("form", ["json", "multipart", "multipart-on-disk"])
def test_it_answers_413_over_the_dataset_size_limit(api, settings, data_dir, form):
    settings.GRIDNODE_MAX_DATASET_BYTES = 4096
    raw = saved(torch.zeros(2048))
    assert len(raw) > 4096
    if form == "json":
        body = {"id": "huge", "encoding": "base64", "data": base64.b64encode(raw).decode()}
        response = api.post("/datasets", body, format="json")
    else:
        if form == "multipart-on-disk":
            settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
        response = api.post("/datasets", {"id": "huge", "data": SimpleUploadedFile("x.pt", raw)}, format="multipart")

    assert response.status_code == 413
    assert response.json() == {"error": "The dataset is larger than this node accepts (4096 bytes)."}
    assert_nothing_stored(data_dir)


def test_a_json_array_over_the_size_limit_is_413(api, settings, data_dir):
    settings.GRIDNODE_MAX_DATASET_BYTES = 4096
    response = api.post("/datasets", {"id": "huge", "data": [0.0] * 2048}, format="json")

    assert response.status_code == 413
    assert_nothing_stored(data_dir)


def test_a_failed_insert_removes_the_stored_file(api, data_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr("datasets_app.services._attach_tags", fail)
    api.raise_request_exception = False
    response = api.post("/datasets", {"id": "d1", "tags": ["#a"], "data": [1.0]}, format="json")

    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error."}
    assert_nothing_stored(data_dir)


def test_a_body_that_is_not_an_object_is_refused(api, data_dir):
    response = api.post("/datasets", [1, 2], format="json")
    assert response.status_code == 400
    assert response.json() == {"error": "The request body must be a JSON object or a form."}

    response = api.post("/datasets", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.json()
    assert_nothing_stored(data_dir)


def test_legacy_torch_files_are_accepted(api):
    # torch < 1.6 wrote this format; it cannot be memory-mapped, so it is read the plain way.
    legacy = io.BytesIO()
    torch.save(torch.arange(4), legacy, _use_new_zipfile_serialization=False)
    body = {"id": "legacy", "encoding": "base64", "data": base64.b64encode(legacy.getvalue()).decode()}
    response = api.post("/datasets", body, format="json")

    assert response.status_code == 201
    assert (response.json()["shape"], response.json()["dtype"]) == ([4], "int64")


@pytest.mark.parametrize("method", ["put", "patch"])
def test_other_methods_are_405(api, method):
    response = getattr(api, method)("/datasets", {}, format="json")
    assert response.status_code == 405
    assert "error" in response.json()


@pytest.mark.parametrize("field", ['"tags": ["\\ud800"]', '"description": "a\\udfff"'])
def test_lone_surrogates_are_refused(api, data_dir, field):
    # Python's JSON reader accepts them; no database could store them.
    response = api.post("/datasets", f'{{"data": [1.0], {field}}}', content_type="application/json")

    assert response.status_code == 400
    assert_nothing_stored(data_dir)


def test_the_database_settles_a_duplicate_that_slips_past_the_early_check(api, upload, data_dir, monkeypatch):
    # As when two uploads of one id race: both pass the early check, the unique constraint decides.
    upload("raced")
    before = stored_files(data_dir)
    monkeypatch.setattr("datasets_app.services.dataset_id_available", lambda **kwargs: None)

    response = api.post("/datasets", {"id": "raced", "tags": ["#late"], "data": [1.0]}, format="json")

    assert response.status_code == 409
    assert response.json() == {"error": "Dataset with id: raced already exists."}
    assert Dataset.objects.count() == 1
    assert stored_files(data_dir) == before
    assert staged_files(data_dir) == []
    assert not Tag.objects.filter(name="#late").exists()
