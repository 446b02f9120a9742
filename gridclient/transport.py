"""HTTP to one grid node over the standard library: JSON calls, streamed uploads and streamed downloads.

A connection is kept alive once its answer has been read to the end, and the next call to the same
node takes it (`_IDLE`); any other connection is closed when its call ends. Error answers become the typed exceptions of
`gridclient.errors`; a node that does not answer becomes `NodeUnreachable` naming the node's URL; an
answer that cannot be read (not HTTP, not JSON, nested past MAX_JSON_DEPTH, larger than the client
reads) becomes `ServerError`.

The node is reached through the proxy that HTTP_PROXY / HTTPS_PROXY / ALL_PROXY name (lower case
first), unless NO_PROXY lists its host: as `requests` and `urllib` do.
"""

import base64
import http.client
import ipaddress
import json
import os
import select
import socket
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple
from urllib.parse import quote, unquote, urlsplit

from gridclient.errors import GENERIC, AnswerTooLarge, ErrorKinds, NodeUnreachable, ServerError
from gridclient.multipart import CHUNK, MultipartBody, SourceReadError
from gridclient.progress import progress_bar
from gridclient.version import VERSION

# An error answer is a short JSON object; a proxy's error page is not read past this.
ERROR_BODY_LIMIT = 64 * 1024
# The most bytes of a JSON (or SMPC message) answer the client reads by default: the largest tensor a
# node answers by default (GRIDNODE_MAX_ANSWER_BYTES, 64 MiB) as base64 in JSON, with room to spare.
DEFAULT_MAX_ANSWER_BYTES = 256 * 1024**2
# The deepest a JSON answer may nest: a prediction is as deep as its tensor has dimensions.
MAX_JSON_DEPTH = 200


def _in_no_proxy_network(host: str) -> bool:
    """Whether NO_PROXY lists a network (`10.0.0.0/8`, as requests reads it) that holds the address `host`."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in (urllib.request.getproxies().get("no") or "").split(","):
        if "/" not in entry:
            continue
        try:
            if address in ipaddress.ip_network(entry.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


class Proxy(NamedTuple):
    """An HTTP proxy to reach the node through: where it listens, and its Proxy-Authorization, if any."""

    host: str
    port: int
    authorization: str | None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def proxy_for(url: str) -> Proxy | None:
    """The proxy the environment names for `url`, as `requests` picks it; None to connect directly.

    HTTPS_PROXY (https URLs) or HTTP_PROXY (http URLs), else ALL_PROXY, lower-case spellings first
    (urllib.request.getproxies); none when NO_PROXY lists the host (urllib.request.proxy_bypass: host
    names with their subdomains, addresses, `*`; and networks such as 10.0.0.0/8). The proxy is spoken
    to in plain HTTP; an https node is reached through a CONNECT tunnel, so TLS still runs end to end.
    """
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    chosen = proxies.get(parts.scheme) or proxies.get("all")
    if not chosen:
        return None
    host = parts.hostname or ""
    if urllib.request.proxy_bypass(f"{host}:{parts.port}" if parts.port else host) or _in_no_proxy_network(host):
        return None
    if "://" not in chosen:
        chosen = f"http://{chosen}"  # `proxy:3128`, as requests reads it
    proxy = urlsplit(chosen)
    if proxy.scheme != "http" or not proxy.hostname:
        raise ValueError(
            f"The proxy for {parts.scheme} URLs is {chosen!r}: this client reaches proxies over plain http:// only."
        )
    authorization = None
    if proxy.username is not None:
        credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    return Proxy(proxy.hostname, proxy.port or 80, authorization)


def path_segment(value: str) -> str:
    """An id made safe to put in a URL path (every reserved character escaped)."""
    return quote(value, safe="")


def trust_setting() -> tuple[str | None, str | None]:
    """Which CAs a TLS context made now checks certificates against: SSL_CERT_FILE and SSL_CERT_DIR (both
    unset: the system's)."""
    return os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")


def tls_context() -> ssl.SSLContext:
    """The TLS context for nodes: the system's CAs (or SSL_CERT_FILE / SSL_CERT_DIR), certificates and names
    checked. Made once per trust setting: building one reads every CA of the system, 24 ms here."""
    key = trust_setting()
    with _TLS_LOCK:
        context = _TLS_CONTEXTS.get(key)
        if context is None:
            context = _TLS_CONTEXTS[key] = ssl.create_default_context()
        return context


_TLS_CONTEXTS: dict[tuple[str | None, str | None], ssl.SSLContext] = {}
_TLS_LOCK = threading.Lock()


class IdleConnections:
    """Connections to nodes whose last answer was read to the end, kept for the next call to the same node
    (at most MAX_PER_NODE per key); a forked child starts with none of its parent's.

    The client's one pool, `_IDLE`, is shared by every `Transport` of this process (an encrypted inference
    makes a client per worker per call), keyed by scheme, host, port and, for https, the trust setting the
    connection was checked under; only direct connections go in it, not those through a proxy. A node
    keeps its own for the calls to its peers (smpc_app.channels).
    """

    MAX_PER_NODE = 8

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._connections: dict[tuple, list[http.client.HTTPConnection]] = {}
        self._pid = os.getpid()

    def take(self, key: tuple) -> http.client.HTTPConnection | None:
        """A kept connection to `key` that the node has not closed meanwhile, or None."""
        while True:
            with self.lock:
                self._forget_after_fork()
                kept = self._connections.get(key)
                if not kept:
                    return None
                connection = kept.pop()
            if not closed_by_peer(connection):
                return connection
            connection.close()

    def give_back(self, key: tuple, connection: http.client.HTTPConnection) -> None:
        with self.lock:
            self._forget_after_fork()
            kept = self._connections.setdefault(key, [])
            if len(kept) < self.MAX_PER_NODE:
                kept.append(connection)
                return
        connection.close()

    def _forget_after_fork(self) -> None:
        if self._pid != os.getpid():  # the sockets are the parent's too: never speak on them here
            self._connections, self._pid = {}, os.getpid()


def closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection was closed by its server (readable while idle means end of
    file). The node's own calls to its peers follow the same rule (smpc_app.channels)."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


_IDLE = IdleConnections()
# What a kept connection may fail with when the node closed it just as it was taken: the request is sent
# again on a new connection (when its body can be sent again).
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class Transport:
    """Requests to the node at `url` (http or https, optionally under a path prefix)."""

    def __init__(
        self, url: str, *, token: str | None, timeout: float, max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    ):
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"The node URL must look like http://host:port, not {url!r}.")
        if max_answer_bytes < 1:
            raise ValueError(f"max_answer_bytes must be at least 1, not {max_answer_bytes!r}.")
        # Shown in messages: without any user:password@ the URL was given with.
        self._netloc = parts.netloc.rpartition("@")[2]
        self.url = f"{parts.scheme}://{self._netloc}{parts.path.rstrip('/')}"
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self.proxy = proxy_for(self.url)

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
            return bytes(self._read_bounded(response))

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
        self,
        path: str,
        target: BinaryIO,
        *,
        kinds: ErrorKinds,
        progress: bool | None,
        description: str,
        max_bytes: int | None = None,
    ) -> int:
        """GET raw bytes (Accept: application/octet-stream) into `target` a chunk at a time; answer the count.

        With `max_bytes`, an answer that declares or sends more raises `AnswerTooLarge` once the limit is
        passed (what was written by then stays in `target`: the caller removes it).
        """
        headers = {"Accept": "application/octet-stream"}
        with self._exchange("GET", path, headers, None, None) as response:
            if response.status >= 300:
                raise self._error(response, kinds)
            content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()
            if content_type == "application/json" or content_type.startswith("text/"):
                # A node that ignores the Accept header (its JSON is not the archive), or a proxy's page.
                what = "JSON" if content_type == "application/json" else content_type
                raise ServerError(response.status, f"The node answered {what} instead of the raw archive.")
            total = _declared_length(response)
            if max_bytes is not None and total is not None and total > max_bytes:
                raise self._too_large(response, f"The download is {total} bytes, which", max_bytes, "max_bytes")
            written = 0
            with progress_bar(total, description, progress) as bar:
                while chunk := self._read(
                    response, CHUNK if max_bytes is None else min(CHUNK, max_bytes + 1 - written)
                ):
                    if max_bytes is not None and written + len(chunk) > max_bytes:
                        raise self._too_large(response, "The download", max_bytes, "max_bytes")
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

    def _idle_key(self) -> tuple | None:
        """Which kept connections this node's calls may take (None: through a proxy, never kept)."""
        if self.proxy is not None:
            return None
        if not self._https:
            return ("http", self._host, self._port)
        return ("https", self._host, self._port, *trust_setting())

    def _connection(self) -> http.client.HTTPConnection:
        proxy = self.proxy
        if proxy is None:
            if self._https:
                return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=tls_context())
            return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        if not self._https:
            return http.client.HTTPConnection(proxy.host, proxy.port, timeout=self.timeout)
        # TLS to the node inside a CONNECT tunnel: the proxy sees the host name, not the requests.
        connection = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=self.timeout, context=tls_context())
        tunnel_headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
        connection.set_tunnel(self._host, self._port, headers=tunnel_headers)
        return connection

    def _exchange(self, method: str, path: str, headers: dict, body, length: int | None) -> "_Exchange":
        target = self._prefix + path
        headers = self._headers(headers)
        if self.proxy is not None and not self._https:
            # A plain-http proxy is sent the whole URL, and its credentials with every request.
            target = f"http://{self._netloc}{target}"
            if self.proxy.authorization:
                headers["Proxy-Authorization"] = self.proxy.authorization
        return _Exchange(self, method, target, headers, body, length)

    def _failure(self, exc: BaseException) -> NodeUnreachable | ServerError:
        """What a failed connection, request or read means: no answer (`NodeUnreachable`), or an answer
        that is not HTTP (`ServerError`)."""
        unreadable = isinstance(exc, http.client.HTTPException) and not isinstance(
            exc, http.client.RemoteDisconnected | http.client.IncompleteRead
        )
        if unreadable:
            return ServerError(
                None, f"The answer of the grid node at {self.url} is not valid HTTP ({type(exc).__name__})."
            )
        reason = _reason(exc, self._host if self.proxy is None else self.proxy.host, self.timeout)
        if self.proxy is not None:
            reason += f" (through the proxy at {self.proxy.address})"
        return NodeUnreachable(self.url, reason)

    def _read(self, response: http.client.HTTPResponse, size: int = -1) -> bytes:
        try:
            return response.read(size) if size >= 0 else response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(exc) from exc

    def _too_large(self, response, what: str, limit: int, setting: str) -> AnswerTooLarge:
        return AnswerTooLarge(
            response.status, f"{what} is larger than this client reads ({setting}={limit} bytes).", limit=limit
        )

    def _read_bounded(self, response: http.client.HTTPResponse) -> bytearray:
        """The whole answer, or `AnswerTooLarge` as soon as it declares or sends more than max_answer_bytes."""
        limit = self.max_answer_bytes
        declared = _declared_length(response)
        if declared is not None and declared > limit:
            raise self._too_large(response, f"The node's answer is {declared} bytes, which", limit, "max_answer_bytes")
        raw = bytearray()
        while chunk := self._read(response, min(CHUNK, limit + 1 - len(raw))):
            raw += chunk
            if len(raw) > limit:
                raise self._too_large(response, "The node's answer", limit, "max_answer_bytes")
        return raw

    def _json_answer(self, response: http.client.HTTPResponse, kinds: ErrorKinds) -> Any:
        if response.status >= 300:
            raise self._error(response, kinds)
        raw = self._read_bounded(response)
        if not raw:
            return None
        answer = _parsed(raw)
        if answer is _UNREADABLE:
            raise ServerError(response.status, "The node's answer is not JSON.")
        if answer is _TOO_DEEP:
            raise ServerError(response.status, f"The node's answer nests JSON deeper than {MAX_JSON_DEPTH} levels.")
        return answer

    def _error(self, response: http.client.HTTPResponse, kinds: ErrorKinds):
        """The typed exception for an error answer, with the node's message when it sent one."""
        raw = self._read(response, ERROR_BODY_LIMIT)
        message = f"HTTP {response.status} {response.reason}".strip()
        body = None
        decoded = _parsed(raw)
        if isinstance(decoded, dict):
            body = decoded
            if isinstance(decoded.get("error"), str) and decoded["error"]:
                message = decoded["error"]
            elif isinstance(decoded.get("detail"), str) and decoded["detail"]:
                message = decoded["detail"]
        return kinds.exception(response.status, message, body)


class _Exchange:
    """One request and its answer: on a connection kept from an earlier call to the node when there is one,
    else on a new one. When the `with` block ends the connection is kept if its answer was read to the end
    (and the node did not ask to close it), else closed."""

    def __init__(self, transport: Transport, method: str, target: str, headers: dict, body, length: int | None):
        self._transport = transport
        self._method = method
        self._target = target
        self._headers = headers
        self._body = body
        self._length = length
        self._key = transport._idle_key()
        self._connection: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None

    def __enter__(self) -> http.client.HTTPResponse:
        kept = _IDLE.take(self._key) if self._key is not None else None
        if kept is not None:
            kept.timeout = self._transport.timeout
            if kept.sock is not None:
                kept.sock.settimeout(self._transport.timeout)
            self._connection = kept
            try:
                self._response = self._send(kept, connect=False)
                return self._response
            except _STALE as exc:
                # Closed by the node as it was taken (its keep-alive ran out): a body of bytes is sent
                # again on a new connection; a streamed one cannot be.
                kept.close()
                if self._body is not None and not isinstance(self._body, bytes):
                    raise self._transport._failure(exc) from exc
            except BaseException:
                kept.close()
                raise
        self._connection = self._transport._connection()
        try:
            self._response = self._send(self._connection, connect=True)
            return self._response
        except BaseException:
            self._connection.close()
            raise

    def _send(self, connection: http.client.HTTPConnection, *, connect: bool) -> http.client.HTTPResponse:
        """Send the request and read the answer's head. On a kept connection (`connect` False), a connection
        the node closed raises its own exception (one of _STALE); every other failure raises the client's."""
        transport = self._transport
        headers = dict(self._headers)
        if self._length is not None:
            headers["Content-Length"] = str(self._length)
        if connect:
            try:
                connection.connect()
            except OSError as exc:
                raise transport._failure(exc) from exc
        try:
            connection.request(self._method, self._target, body=self._body, headers=headers)
        except SourceReadError:
            raise
        except (BrokenPipeError, ConnectionResetError) as exc:
            if not connect:
                raise
            # The node may have answered before reading the whole body (e.g. 413 from Content-Length):
            # its answer says more than the broken pipe does.
            try:
                return connection.getresponse()
            except (OSError, http.client.HTTPException):
                raise transport._failure(exc) from exc
        except (OSError, http.client.HTTPException) as exc:
            if not connect and isinstance(exc, _STALE):
                raise
            raise transport._failure(exc) from exc
        try:
            return connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            if not connect and isinstance(exc, _STALE):
                raise
            raise transport._failure(exc) from exc

    def __exit__(self, exc_type, *exc_info) -> None:
        connection, response, key = self._connection, self._response, self._key
        if connection is None:
            return
        reusable = (
            exc_type is None
            and key is not None
            and response is not None
            and response.isclosed()  # read to its end: the next answer starts where this one ended
            and not response.will_close
        )
        if reusable and key is not None:
            _IDLE.give_back(key, connection)
        else:
            connection.close()


def _declared_length(response: http.client.HTTPResponse) -> int | None:
    declared = (response.getheader("Content-Length") or "").strip()
    return int(declared) if declared.isdigit() else None


# What _parsed answers for bytes that are not JSON, or JSON nested deeper than MAX_JSON_DEPTH.
_UNREADABLE = object()
_TOO_DEEP = object()


def _parsed(raw: bytes | bytearray) -> Any:
    """The JSON document in `raw`, or _UNREADABLE / _TOO_DEEP. Never raises: a node's answer may be
    anything, including nesting deep enough to exhaust the parser's recursion."""
    try:
        document = json.loads(raw)
    except RecursionError:
        return _TOO_DEEP
    except ValueError:  # UnicodeDecodeError included
        return _UNREADABLE
    return document if _depth_within(document, MAX_JSON_DEPTH) else _TOO_DEEP


def _depth_within(document: Any, limit: int) -> bool:
    """Whether a parsed JSON document nests at most `limit` lists and objects deep (without recursion)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            value = list(value.values())
        elif not isinstance(value, list):
            continue
        if depth > limit:
            return False
        pending.extend((item, depth + 1) for item in value if isinstance(item, dict | list))
    return True


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
