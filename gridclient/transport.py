"""HTTP to one grid node over the standard library: JSON calls, streamed uploads and streamed downloads.

One connection per call, closed when the answer is read. Error answers become the typed exceptions of
`gridclient.errors`; a node that does not answer becomes `NodeUnreachable` naming the node's URL.
"""

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

from gridclient.errors import GENERIC, ErrorKinds, NodeUnreachable, ServerError
from gridclient.multipart import CHUNK, MultipartBody, SourceReadError
from gridclient.progress import progress_bar
from gridclient.version import VERSION

# An error answer is a short JSON object; a proxy's error page is not read past this.
ERROR_BODY_LIMIT = 64 * 1024


def path_segment(value: str) -> str:
    """An id made safe to put in a URL path (every reserved character escaped)."""
    return quote(value, safe="")


class Transport:
    """Requests to the node at `url` (http or https, optionally under a path prefix)."""

    def __init__(self, url: str, *, token: str | None, timeout: float):
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"The node URL must look like http://host:port, not {url!r}.")
        # Shown in messages: without any user:password@ the URL was given with.
        self.url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path.rstrip('/')}"
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self.timeout = timeout

    # -- the three kinds of call -------------------------------------------------------------------

    def json(self, method: str, path: str, payload: Any = None, *, kinds: ErrorKinds = GENERIC) -> Any:
        """Send `payload` as JSON (or no body), and answer the node's JSON (None for an empty answer)."""
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        with self._exchange(method, path, headers, body, len(body) if body is not None else None) as response:
            return self._json_answer(response, kinds)

    def message(self, path: str, body: bytes, *, kinds: ErrorKinds) -> bytes:
        """POST raw bytes (an SMPC message) and answer the node's raw bytes."""
        headers = {"Accept": "application/octet-stream", "Content-Type": "application/octet-stream"}
        with self._exchange("POST", path, headers, body, len(body)) as response:
            if response.status >= 300:
                raise self._error(response, kinds)
            return self._read(response)

    def upload(
        self, path: str, body: MultipartBody, *, kinds: ErrorKinds, progress: bool | None, description: str
    ) -> Any:
        """POST a multipart body, streamed from its file with a progress bar; answer the node's JSON."""
        headers = {"Accept": "application/json", "Content-Type": body.content_type}
        with progress_bar(body.length, description, progress) as bar:
            chunks = _counted(body.chunks(), bar)
            with self._exchange("POST", path, headers, chunks, body.length) as response:
                return self._json_answer(response, kinds)

    def download(
        self, path: str, target: BinaryIO, *, kinds: ErrorKinds, progress: bool | None, description: str
    ) -> int:
        """GET raw bytes (Accept: application/octet-stream) into `target` a chunk at a time; answer the count."""
        headers = {"Accept": "application/octet-stream"}
        with self._exchange("GET", path, headers, None, None) as response:
            if response.status >= 300:
                raise self._error(response, kinds)
            if (response.getheader("Content-Type") or "").startswith("application/json"):
                # A node that ignores the Accept header: its JSON is not the archive.
                raise ServerError(response.status, "The node answered JSON instead of the raw archive.")
            declared = response.getheader("Content-Length")
            total = int(declared) if declared and declared.isdigit() else None
            written = 0
            with progress_bar(total, description, progress) as bar:
                while chunk := self._read(response, CHUNK):
                    target.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            if total is not None and written != total:
                raise NodeUnreachable(self.url, f"the connection closed after {written} of {total} bytes.")
            return written

    # -- plumbing ----------------------------------------------------------------------------------

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {"User-Agent": f"gridclient/{VERSION}", **extra}
        if self._token:
            headers["Authorization"] = f"Token {self._token}"
        return headers

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _exchange(self, method: str, path: str, headers: dict, body, length: int | None) -> "_Exchange":
        return _Exchange(self, method, self._prefix + path, self._headers(headers), body, length)

    def _unreachable(self, exc: BaseException) -> NodeUnreachable:
        return NodeUnreachable(self.url, _reason(exc, self._host, self.timeout))

    def _read(self, response: http.client.HTTPResponse, size: int = -1) -> bytes:
        try:
            return response.read(size) if size >= 0 else response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc

    def _json_answer(self, response: http.client.HTTPResponse, kinds: ErrorKinds) -> Any:
        if response.status >= 300:
            raise self._error(response, kinds)
        raw = self._read(response)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerError(response.status, "The node's answer is not JSON.") from None

    def _error(self, response: http.client.HTTPResponse, kinds: ErrorKinds):
        """The typed exception for an error answer, with the node's message when it sent one."""
        raw = self._read(response, ERROR_BODY_LIMIT)
        message = f"HTTP {response.status} {response.reason}".strip()
        body = None
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            body = decoded
            if isinstance(decoded.get("error"), str) and decoded["error"]:
                message = decoded["error"]
            elif isinstance(decoded.get("detail"), str) and decoded["detail"]:
                message = decoded["detail"]
        return kinds.exception(response.status, message, body)


class _Exchange:
    """One request and its answer on a fresh connection, closed when the `with` block ends."""

    def __init__(self, transport: Transport, method: str, target: str, headers: dict, body, length: int | None):
        self._transport = transport
        self._method = method
        self._target = target
        self._headers = headers
        self._body = body
        self._length = length
        self._connection: http.client.HTTPConnection | None = None

    def __enter__(self) -> http.client.HTTPResponse:
        self._connection = self._transport._connection()
        try:
            return self._send(self._connection)
        except BaseException:
            self._connection.close()
            raise

    def _send(self, connection: http.client.HTTPConnection) -> http.client.HTTPResponse:
        transport = self._transport
        headers = dict(self._headers)
        if self._length is not None:
            headers["Content-Length"] = str(self._length)
        try:
            connection.connect()
        except OSError as exc:
            raise transport._unreachable(exc) from exc
        try:
            connection.request(self._method, self._target, body=self._body, headers=headers)
        except SourceReadError:
            raise
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The node may have answered before reading the whole body (e.g. 413 from Content-Length):
            # its answer says more than the broken pipe does.
            try:
                return connection.getresponse()
            except (OSError, http.client.HTTPException):
                raise transport._unreachable(exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise transport._unreachable(exc) from exc
        try:
            return connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise transport._unreachable(exc) from exc

    def __exit__(self, *exc_info) -> None:
        if self._connection is not None:
            self._connection.close()


def _counted(chunks: Iterator[bytes], bar) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk
        bar.update(len(chunk))


def _reason(exc: BaseException, host: str, timeout: float) -> str:
    """Why the node could not be reached, in words a user can act on."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the node running, and on this port?)"
    if isinstance(exc, socket.gaierror):
        return f"the host name {host!r} could not be resolved"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} seconds"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionError | http.client.RemoteDisconnected):
        return "the connection was closed before the node answered"
    if isinstance(exc, http.client.HTTPException):
        return f"the node's answer is not valid HTTP ({type(exc).__name__})"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
