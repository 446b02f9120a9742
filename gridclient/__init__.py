"""A Python client for a grid node: `from gridclient import GridNodeClient`.

    client = GridNodeClient("http://127.0.0.1:8000")
    client.serve_model(model, "mlp", allow_remote_inference=True)
    client.run_inference("mlp", torch.rand(1, 4))

Encrypted models (secret-shared across nodes) are in `gridclient.encrypted`.

The command line is `python -m gridclient` (also installed as `gridnode-client`).
"""

from gridclient.client import DEFAULT_URL, EncryptedModelNodes, GridNodeClient
from gridclient.errors import (
    AnswerTooLarge,
    AuthenticationFailed,
    Conflict,
    DatasetExists,
    DatasetNotFound,
    GridNodeError,
    InvalidRequest,
    ModelExists,
    ModelNotFound,
    ModelNotScriptable,
    ModelRefused,
    NodeUnreachable,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ServerError,
    Unauthorized,
)
from gridclient.version import VERSION as __version__

__all__ = [
    "DEFAULT_URL",
    "AnswerTooLarge",
    "AuthenticationFailed",
    "Conflict",
    "DatasetExists",
    "DatasetNotFound",
    "EncryptedModelNodes",
    "GridNodeClient",
    "GridNodeError",
    "InvalidRequest",
    "ModelExists",
    "ModelNotFound",
    "ModelNotScriptable",
    "ModelRefused",
    "NodeUnreachable",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "ServerError",
    "Unauthorized",
    "__version__",
]
