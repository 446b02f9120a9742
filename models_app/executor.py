"""Hosted models run in the node's inference processes, never in a process that serves HTTP.

A model is a stranger's program: it may loop forever, allocate what the caller asks for, or crash its
process. So every inference (`POST /model/<id>`, its fast path, `POST /v2/models/<id>/infer`) is sent to
a pool of inference processes (models_app/executor_pool.py) over a Unix socket, and each process runs
one inference at a time under bounds the kernel enforces:

- a deadline (GRIDNODE_INFERENCE_TIMEOUT): an interval timer whose signal kills the process, however
  the model spins (a thread cannot be stopped, and a model that never returns to Python ignores any
  signal handler); the pool replaces the process and the caller gets a 504 naming the limit;
- a memory cap (GRIDNODE_INFERENCE_MEMORY_BYTES above what the process holds, the model included):
  RLIMIT_DATA, so an allocation past it fails at once instead of taking the machine's memory; the
  caller gets a 422 and the process is replaced, so its memory returns to where it was;
- an answer cap (GRIDNODE_MAX_ANSWER_BYTES): the answer's tensors are measured before they are rendered,
  and the rendered body again, so a tiny request cannot make a huge answer.

Every process listens on one socket and takes a connection only when it is idle, so the kernel's accept
queue is one fair, first-come queue of inferences for the whole node, whichever HTTP worker took the
request. What crosses the socket is a small frame format of our own (a JSON header and raw bytes), never
a pickle: a web process trusts nothing an inference process says beyond its status, its error text and
the bytes it hands back as the answer.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

from django.conf import settings
from django.core.files.storage import default_storage

from gridnode.errors import BadRequest, GridError, NotFound, ServiceUnavailable
from models_app.executor_pool import allocator_environment

# The environment variable that names the pool's socket, set by whoever started the pool (gunicorn's
# master, see gunicorn.conf.py) and inherited by the processes that use it.
ADDRESS_VARIABLE = "GRIDNODE_INFERENCE_ADDRESS"
STARTED_VARIABLE = "GRIDNODE_INFERENCE_STARTED"  # when it was started (time.time()), to wait while it starts
_HEADER = struct.Struct(">II")  # JSON header length, number of blobs
_BLOB = struct.Struct(">Q")
# A header is a few hundred bytes; anything far larger is not ours.
_MAX_HEADER_BYTES = 1024 * 1024
# How long a process that starts its own pool waits for it to take connections (it imports torch).
_POOL_START_SECONDS = 120
# How long a request may wait in the queue for a free inference process, beyond the model's own deadline.
QUEUE_ALLOWANCE_SECONDS = 30

# The longest error text an inference process sends and a web process passes on (the rest is cut): an error
# may quote what the caller sent, and an error frame must stay far below _MAX_HEADER_BYTES.
MAX_ERROR_CHARS = 1000

DEADLINE_STATUS = 504
MEMORY_STATUS = 422
CRASH_STATUS = 500


class FrameError(Exception):
    """A frame that does not follow the format, or that is larger than the reader allows."""


@dataclass
class Frame:
    """One message on the socket: a JSON object and the raw byte strings it refers to by position."""

    header: dict
    blobs: list[bytes] = field(default_factory=list)

    def pack(self) -> list[bytes]:
        """The frame as byte strings to send in order (blobs are not copied)."""
        header = json.dumps(self.header, separators=(",", ":")).encode()
        parts = [_HEADER.pack(len(header), len(self.blobs)), header]
        for blob in self.blobs:
            parts.append(_BLOB.pack(len(blob)))
            parts.append(blob)
        return parts


def send_frame(connection: socket.socket, frame: Frame) -> None:
    """Write one frame; small frames go in one send."""
    parts = frame.pack()
    if sum(len(part) for part in parts) <= 65536:
        connection.sendall(b"".join(parts))
        return
    for part in parts:
        connection.sendall(part)


def receive_frame(connection: socket.socket, *, max_blob_bytes: int) -> Frame | None:
    """Read one frame, or None when the peer closed the connection before sending anything."""
    start = _receive_exactly(connection, _HEADER.size, allow_eof=True)
    if start is None:
        return None
    header_length, blob_count = _HEADER.unpack(start)
    if header_length > _MAX_HEADER_BYTES or blob_count > 64:
        raise FrameError("frame header too large")
    try:
        header = json.loads(_receive_exactly(connection, header_length))
    except ValueError:
        raise FrameError("frame header is not JSON") from None
    if not isinstance(header, dict):
        raise FrameError("frame header is not an object")
    blobs, total = [], 0
    for _ in range(blob_count):
        (size,) = _BLOB.unpack(_receive_exactly(connection, _BLOB.size))
        total += size
        if total > max_blob_bytes:
            raise FrameError("frame larger than allowed")
        blobs.append(_receive_exactly(connection, size))
    return Frame(header, blobs)


@overload
def _receive_exactly(connection: socket.socket, size: int, *, allow_eof: Literal[False] = False) -> bytes: ...
@overload
def _receive_exactly(connection: socket.socket, size: int, *, allow_eof: bool) -> bytes | None: ...
def _receive_exactly(connection: socket.socket, size: int, *, allow_eof: bool = False) -> bytes | None:
    """`size` bytes from the connection; None (with allow_eof) when it closed before the first of them."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        count = connection.recv_into(view[received:])
        if count == 0:
            if allow_eof and received == 0:
                return None
            raise FrameError("connection closed mid-frame")
        received += count
    return bytes(buffer)


# --- The web side: one call per inference -------------------------------------------------------------


@dataclass
class ModelRef:
    """What an inference process needs to find a hosted model's archive: never the archive itself."""

    model_id: str
    archive: str  # the storage name: a fresh uuid per upload, so it names one version of the model
    kind: str
    path: str | None = None  # a file outside storage (an upload being checked)

    def as_header(self) -> dict:
        """What the inference process is sent. On the object store, the archive's local copy on this replica
        (fetched first if need be), and the sha256 the process checks it against before loading it."""
        path, sha256 = self.path, None
        if path is None:
            try:
                path = default_storage.path(self.archive)
            except NotImplementedError:  # the object store (gridnode/objectstore.py)
                sha256 = archive_sha256(self.archive)
                path = str(fetched_copy(self.archive, sha256))
        header = {"id": self.model_id, "archive": self.archive, "kind": self.kind, "path": path}
        if sha256 is not None:
            header["sha256"] = sha256
        return header


# Storage name -> sha256 of the hosted models this process has run from the object store. A stored name
# is never reused, so an entry never goes stale; bounded so deleted models do not pile up.
_ARCHIVE_SHA256: dict[str, str] = {}
_ARCHIVE_SHA256_ENTRIES = 4096


def archive_sha256(name: str) -> str:
    """The sha256 the row of the archive stored as `name` records, or the 404 of a model deleted meanwhile."""
    known = _ARCHIVE_SHA256.get(name)
    if known is not None:
        return known
    from models_app.models import HostedModel

    found = HostedModel.objects.filter(archive=name).values_list("sha256", flat=True).first()
    if found is None:
        raise NotFound("Model not found.")
    if len(_ARCHIVE_SHA256) >= _ARCHIVE_SHA256_ENTRIES:
        _ARCHIVE_SHA256.clear()
    _ARCHIVE_SHA256[name] = found
    return found


def fetched_copy(name: str, sha256: str) -> Path:
    """This replica's checked copy of a stored archive (gridnode/objectstore.py local_copy), or the error
    to answer: a 404 when the store no longer has it, a 500 when its bytes are not the ones uploaded."""
    from gridnode.objectstore import DamagedCopy, local_copy  # a store that does not answer: its 503

    try:
        return local_copy(name, sha256)
    except FileNotFoundError:
        raise NotFound("Model not found.") from None
    except DamagedCopy:
        raise GridError(
            "The stored archive of this model does not match the sha256 recorded at its upload; the operator "
            "should restore it or delete the model (manage.py storage_check).",
            status=500,
        ) from None


@dataclass
class Outcome:
    """An inference process's answer: the rendered body on success, else the error to raise."""

    status: int
    payload: bytes = b""
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)
    error: str | None = None
    fields: dict = field(default_factory=dict)
    ran: bool = True  # whether the model's code started (False: refused before, e.g. the body's form)
    answered: bool = True  # False: the process ended (killed at a deadline, crashed) before answering

    def raise_for_error(self) -> None:
        if self.error is not None:
            error = GridError(self.error, status=self.status)
            error.fields = dict(self.fields)  # may hold a "status" of its own (the contract's status: false)
            raise error


# Settings an inference process reads while it runs one request: sent with each request, so the process
# follows the settings of the process that took the request (tests override them per test).
LIMIT_SETTINGS = (
    "GRIDNODE_INFERENCE_TIMEOUT",
    "GRIDNODE_INFERENCE_MEMORY_BYTES",
    "GRIDNODE_MAX_ANSWER_BYTES",
    "GRIDNODE_MAX_INFERENCE_BATCH",
    "GRIDNODE_MAX_BODY_BYTES",
    "GRIDNODE_LOAD_TIMEOUT",
    "GRIDNODE_MAX_MODEL_BYTES",
    "GRIDNODE_MODEL_CACHE_SIZE",
)


def run(op: str, model: ModelRef, body: dict, blobs: list[bytes]) -> Outcome:
    """Send one inference to the pool and wait for its outcome (success or error, never an exception).

    `op` names what the process does (see executor_pool.OPERATIONS); `body` and `blobs` are the request's
    data in the form that operation reads.
    """
    limits = {name: getattr(settings, name) for name in LIMIT_SETTINGS}
    try:
        header = model.as_header()
    except GridError as error:  # the archive could not be had from the object store: nothing ran
        return Outcome(error.status, error=error.message, fields=dict(getattr(error, "fields", {})), ran=False)
    frame = Frame({"op": op, "model": header, "limits": limits, "body": body}, blobs)
    deadline = settings.GRIDNODE_INFERENCE_TIMEOUT
    started = time.monotonic()
    connection = _connect()
    try:
        # Queue, load and run: the process enforces the model's own deadline; this bound only keeps a
        # caller from waiting forever on a pool that stopped answering.
        connection.settimeout(deadline + settings.GRIDNODE_LOAD_TIMEOUT + QUEUE_ALLOWANCE_SECONDS)
        send_frame(connection, frame)
        reply = receive_frame(connection, max_blob_bytes=settings.GRIDNODE_MAX_ANSWER_BYTES + 1024 * 1024)
    except TimeoutError:
        return _deadline_outcome(deadline)
    except (FrameError, OSError):
        reply = None
    finally:
        connection.close()
    if reply is None:
        # The process ended without answering: killed at its deadline, or crashed by the model. (A crash
        # after a wait in the queue longer than the deadline is reported as the deadline.)
        if time.monotonic() - started >= deadline:
            return _deadline_outcome(deadline)
        return Outcome(
            CRASH_STATUS, error="The model stopped the process that ran it before it answered.", answered=False
        )
    pool_cache.record(reply.header.get("cache"))
    return _outcome(reply)


class PoolCacheStats:
    """The inference processes' model caches as their answers report them (for /metrics).

    Counts of lookups that found the model loaded (`hits`), that loaded it (`misses`) and of models dropped
    to stay within GRIDNODE_MODEL_CACHE_SIZE (`evictions`), seen by this web process; `len()` is the
    models loaded in the inference processes, as each last reported.
    """

    _MAX_PROCESSES = 256

    def __init__(self) -> None:
        self.hits = self.misses = self.evictions = 0
        self._models: dict[int, int] = {}
        self._lock = threading.Lock()

    def record(self, report) -> None:
        if not isinstance(report, dict):
            return
        with self._lock:
            if report.get("hit") is True:
                self.hits += 1
            elif report.get("hit") is False:
                self.misses += 1
            evictions, models, process = report.get("evictions"), report.get("models"), report.get("process")
            if isinstance(evictions, int) and evictions > 0:
                self.evictions += evictions
            if isinstance(models, int) and isinstance(process, int):
                self._models.pop(process, None)
                self._models[process] = models
                while len(self._models) > self._MAX_PROCESSES:  # replaced processes age out
                    del self._models[next(iter(self._models))]

    def __len__(self) -> int:
        return sum(self._models.values())


pool_cache = PoolCacheStats()


def _deadline_outcome(deadline: int) -> Outcome:
    return Outcome(
        DEADLINE_STATUS,
        answered=False,
        error=f"The model did not finish within this node's limit of {deadline} seconds per inference "
        "(GRIDNODE_INFERENCE_TIMEOUT); it was stopped.",
    )


def _outcome(reply: Frame) -> Outcome:
    header = reply.header
    status = header.get("status")
    if not isinstance(status, int) or not 200 <= status <= 599:
        return Outcome(CRASH_STATUS, error="The inference process answered something this node does not read.")
    error = header.get("error")
    if error is not None:
        fields = header.get("fields")
        return Outcome(
            status,
            error=str(error)[:MAX_ERROR_CHARS],
            fields=fields if isinstance(fields, dict) else {},
            ran=header.get("ran") is not False,
        )
    headers = header.get("headers")
    if not isinstance(headers, dict):
        headers = {}
    return Outcome(
        status,
        payload=reply.blobs[0] if reply.blobs else b"",
        content_type=str(header.get("content_type") or "application/json"),
        headers={str(name): str(value) for name, value in headers.items()},
    )


_pool_lock = threading.Lock()
_own_pool: subprocess.Popen | None = None


def _connect() -> socket.socket:
    """A connection to the pool, starting this process's own pool first when nobody started one.

    A pool that is still starting (it imports torch) is waited for, up to _POOL_START_SECONDS after it
    was started; a pool that is gone is a 503 at once.
    """
    address = os.environ.get(ADDRESS_VARIABLE)
    if address is None:
        address = _start_own_pool()
    started = float(os.environ.get(STARTED_VARIABLE) or 0)
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(b"\0" + address.encode())
            return connection
        except OSError:
            connection.close()
        pool_exited = _own_pool is not None and _own_pool.poll() is not None
        if pool_exited or time.time() - started > _POOL_START_SECONDS:
            raise ServiceUnavailable(
                "This node's inference processes are not running; the operator should restart the node."
            )
        time.sleep(0.02)


def _start_own_pool() -> str:
    """Start a pool owned by this process (runserver, tests, a shell); it stops when this process exits.

    Under gunicorn the master starts one pool for all its workers instead (gunicorn.conf.py).
    """
    global _own_pool
    with _pool_lock:
        if os.environ.get(ADDRESS_VARIABLE) is None:
            _own_pool = start_pool()
        return os.environ[ADDRESS_VARIABLE]


def start_pool() -> subprocess.Popen:
    """Start the pool's supervisor listening on a fresh abstract Unix socket name, and announce it.

    Processes forked or started from this one afterwards find the pool through the environment. The pool
    reads its standard input until end of file, which comes when every process holding the other end
    (this one, and gunicorn's workers forked from it) is gone, and then stops.
    """
    address = f"gridnode-inference-{os.getpid()}-{os.urandom(4).hex()}"
    root = Path(__file__).resolve().parent.parent
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "gridnode.settings"),
        **allocator_environment(settings.GRIDNODE_INFERENCE_ALLOCATOR, os.environ),
    }
    environment.pop(ADDRESS_VARIABLE, None)
    pool = subprocess.Popen(
        [sys.executable, "-m", "models_app.executor_pool", address], cwd=root, env=environment, stdin=subprocess.PIPE
    )
    os.environ[STARTED_VARIABLE] = str(time.time())
    os.environ[ADDRESS_VARIABLE] = address
    return pool


def check_archive(path: Path, kind: str) -> None:
    """Prove an uploaded archive loads and passes every check, in an inference process; a 400 saying why not.

    The process loads it under archives.load_seconds(its size) and a memory bound, and keeps nothing: an
    archive whose checks blow up (a call tree that doubles at every level) stops that process, not this one.
    """
    from models_app.archives import load_seconds

    outcome = run("check", ModelRef(model_id="", archive="", kind=kind, path=str(path)), {}, [])
    if not outcome.answered:
        seconds = load_seconds(path.stat().st_size)
        raise BadRequest(
            f"The archive did not finish loading within {seconds:.0f} seconds (or it stopped the process)."
        )
    outcome.raise_for_error()
