"""Ids that try to leave the storage folder: refused by the id rules; files are named by the node, never by ids
or by the names clients give their file parts."""

import fnmatch
import io
import os

import pytest

from tests.conftest import saved_tensor
from tests.security.conftest import assert_refused, stored_files, stored_state

pytestmark = pytest.mark.django_db

TRAVERSALS = [
    "../../etc/passwd",
    "..",
    ".",
    "./mlp",
    "..\\..\\windows\\win.ini",
    "mlp\\..\\..\\secret",
    "/etc/passwd",
    "C:\\boot.ini",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%2f..%2fetc%2fpasswd",
    "%252e%252e%252fetc",
    "..%c0%af..%c0%afetc",
    "....//....//etc",
    "~/.ssh/id_rsa",
]

# The same ids in a URL: raw, and percent-encoded so that they arrive decoded in the path.
PATH_TRAVERSALS = [
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2e%2e",
    "..%5C..%5Cwindows",
    "mlp%5C..%5C..%5Csecret",
    "%252e%252e%252fetc",
    "..%c0%af..%c0%afetc",
    "..",
    "~%2F.ssh",
]

PATH_ENDPOINTS = [
    ("GET", "/is_model_copy_allowed/{}"),
    ("GET", "/get_model/{}"),
    ("POST", "/model/{}"),
    ("GET", "/datasets/{}"),
    ("GET", "/datasets/{}/data"),
    ("DELETE", "/datasets/{}"),
    ("GET", "/encrypted-models/{}"),
    ("GET", "/v2/models/{}"),
]


@pytest.mark.parametrize("traversal", PATH_TRAVERSALS)
@pytest.mark.parametrize(("method", "template"), PATH_ENDPOINTS)
def test_it_refuses_a_traversal_in_the_path(api, hosted, data_dir, traversal, method, template):
    before = stored_state(data_dir)

    response = api.generic(method, template.format(traversal), b"{}", content_type="application/json")

    assert response.status_code in (400, 404)
    assert_refused(response, response.status_code)
    assert b"root:" not in response.content
    assert stored_state(data_dir) == before


@pytest.mark.parametrize("path", ["/get_model/../../etc/passwd", "/datasets/../../etc/passwd/data", "/get_model/.."])
def test_an_unnormalised_path_matches_no_route(api, hosted, path):
    response = api.get(path)

    assert response.status_code in (400, 404)
    assert_refused(response, response.status_code)
    assert b"root:" not in response.content


@pytest.mark.parametrize("traversal", TRAVERSALS)
def test_it_refuses_a_traversal_as_a_model_id(api, mlp_jit, data_dir, traversal):
    response = api.post("/serve-model", {"model_id": traversal, "model": io.BytesIO(mlp_jit)}, format="multipart")

    assert "'model_id' must be" in assert_refused(response, 400)
    assert stored_files(data_dir) == []


@pytest.mark.parametrize("traversal", TRAVERSALS)
def test_it_refuses_a_traversal_as_a_dataset_id(api, data_dir, traversal):
    response = api.post("/datasets", {"id": traversal, "tags": ["t"], "data": [1.0, 2.0]}, format="json")

    assert "'id' must be" in assert_refused(response, 400)
    assert stored_files(data_dir) == []


@pytest.mark.parametrize("traversal", TRAVERSALS)
def test_it_refuses_a_traversal_to_delete(api, hosted, data_dir, traversal):
    before = stored_state(data_dir)

    response = api.post("/delete-model", {"model_id": traversal}, format="json")

    assert_refused(response, 400)
    assert stored_state(data_dir) == before


def test_a_file_part_named_to_escape_is_stored_under_the_nodes_own_name(api, mlp_jit, data_dir, tmp_path):
    part = io.BytesIO(mlp_jit)
    part.name = "../../../../escaped.pt"

    response = api.post("/serve-model", {"model_id": "named", "model": part}, format="multipart")

    assert response.status_code == 200
    [stored] = stored_files(data_dir)
    assert stored.startswith("models/")
    assert "escaped" not in stored
    assert not files_named(tmp_path.parents[2], "escaped.pt")


def test_a_tensor_part_named_to_escape_is_stored_under_the_nodes_own_name(api, data_dir, tmp_path):
    part = io.BytesIO(saved_tensor([1.0, 2.0]))
    part.name = "..\\..\\..\\escaped.pt"

    response = api.post("/datasets", {"id": "named", "tags": ["t"], "data": part}, format="multipart")

    assert response.status_code == 201
    [stored] = stored_files(data_dir)
    assert stored.startswith("datasets/")
    assert "escaped" not in stored
    assert not files_named(tmp_path.parents[2], "*escaped.pt")


def files_named(root, pattern: str) -> list[str]:
    """Files under `root` whose name matches `pattern`. A folder that goes away during the walk (another
    test session cleaning up its temp folders in the same /tmp) is skipped, where Path.glob raised."""
    return [
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)  # errors in listing a folder are ignored
        for name in fnmatch.filter(names, pattern)
    ]
