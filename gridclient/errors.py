"""What can go wrong when talking to a grid node, as exception types a caller can catch one by one.

Every failure the node reports carries its HTTP status and the node's own message (the `error` key of
its JSON answer); a node that cannot be reached raises `NodeUnreachable`, naming the URL.
"""


class GridNodeError(Exception):
    """A request to a grid node failed: `status` is the HTTP status (None when there was no answer)."""

    def __init__(self, status: int | None, message: str, *, body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        # The node's whole JSON answer, for the keys beside "error" (e.g. "success": false).
        self.body = body or {}

    def __str__(self) -> str:
        return self.message if self.status is None else f"{self.message} (HTTP {self.status})"


class NodeUnreachable(GridNodeError):
    """No answer: the connection was refused or dropped, the name did not resolve, or the node timed out."""

    def __init__(self, url: str, reason: str):
        super().__init__(None, f"Could not reach the grid node at {url}: {reason}")
        self.url = url


class InvalidRequest(GridNodeError):
    """400: the node refused what was sent (a bad id, field, encoding, or bytes that are not a model)."""


class Unauthorized(GridNodeError):
    """401: the node wants a token (GRIDNODE_TOKEN or `token=`), or the one sent is wrong."""


AuthenticationFailed = Unauthorized


class PermissionDenied(GridNodeError):
    """403: the owner does not allow this (downloading the model, running inference, getting the data)."""


class NotFound(GridNodeError):
    """404: nothing on the node has that id."""


class ModelNotFound(NotFound):
    """404 from a model endpoint: no model with that id."""


class DatasetNotFound(NotFound):
    """404 from a dataset endpoint: no dataset with that id."""


class Conflict(GridNodeError):
    """409: the id is taken."""


class ModelExists(Conflict):
    """409 from a model endpoint: a model with that id is already on the node."""


class DatasetExists(Conflict):
    """409 from a dataset endpoint: a dataset with that id is already on the node."""


class PayloadTooLarge(GridNodeError):
    """413: the model, dataset or request body is larger than the node accepts."""


class ServerError(GridNodeError):
    """5xx, or an answer that is not what the contract says: the node failed, not the request."""


class AnswerTooLarge(ServerError):
    """The node's answer is larger than the client reads: a JSON answer past `max_answer_bytes`, or a
    download past the `max_bytes` it was given. Nothing of it is kept (a partial file is removed)."""

    def __init__(self, status: int | None, message: str, *, limit: int):
        super().__init__(status, message)
        self.limit = limit


class ModelRefused(ServerError):
    """`download_model` refused the node's archive before torch read it: it breaks a rule the node itself
    applies to uploads (a pickle that would run code, an operator outside the allowlist, ...; `message`
    says which), or it is not a model archive at all. Nothing of the archive ran."""


class ModelNotScriptable(ValueError):
    """`serve_model` was given an nn.Module that torch.jit.script cannot compile (nothing was sent)."""


class ErrorKinds:
    """Which exception each status raises, for one family of endpoints."""

    def __init__(self, *, not_found: type[NotFound] = NotFound, conflict: type[Conflict] = Conflict):
        self.not_found = not_found
        self.conflict = conflict

    def exception(self, status: int, message: str, body: dict | None = None) -> GridNodeError:
        """The exception for an error answer of the node."""
        by_status: dict[int, type[GridNodeError]] = {
            400: InvalidRequest,
            401: Unauthorized,
            403: PermissionDenied,
            404: self.not_found,
            409: self.conflict,
            413: PayloadTooLarge,
        }
        kind = by_status.get(status)
        if kind is None:
            kind = ServerError if status >= 500 else GridNodeError
        return kind(status, message, body=body)


GENERIC = ErrorKinds()
MODELS = ErrorKinds(not_found=ModelNotFound, conflict=ModelExists)
DATASETS = ErrorKinds(not_found=DatasetNotFound, conflict=DatasetExists)
