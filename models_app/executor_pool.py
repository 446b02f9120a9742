"""The node's inference processes: `python -m models_app.executor_pool ADDRESS` (see models_app/executor.py).

The supervisor imports torch and the node's code once, binds the pool's socket, and forks the inference
processes from itself, so each starts warm and shares the supervisor's pages until it writes them. It
replaces every process that exits (killed at its deadline, recycled after a memory refusal, crashed),
turns whatever the processes print into log lines it writes itself, and stops, with its processes, when
its standard input reaches end of file (the process that started it is gone) or on SIGTERM.

An inference process takes one connection at a time: it reads one request, loads the model (its own
least-recently-used cache, keyed by model id and archive name, as before), runs it under the deadline
and the memory cap, answers, and goes back to accept the next connection.
"""

import contextlib
import ctypes
import ctypes.util
import io
import logging
import os
import resource
import select
import selectors
import signal
import socket
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models_app.archives import LoadedModel

logger = logging.getLogger("gridnode.inference")

# Longest line of a process's output that is logged (the rest is cut) and lines logged per process
# between two requests' worth of time: a model that prints without end must not flood the log.
_MAX_LINE_CHARS = 2000
_MAX_LINES_PER_SECOND = 20
# A process that exits within this many seconds of starting is restarted after a pause that doubles.
_QUICK_EXIT_SECONDS = 2.0
_BACKLOG = 1024


def pool_size() -> int:
    """How many inference processes: the setting, else two more than the cores (README)."""
    from django.conf import settings

    return settings.GRIDNODE_INFERENCE_PROCESSES or (os.cpu_count() or 1) + 2


def torch_threads(processes: int) -> int:
    """Torch threads per inference process: the setting, else the cores shared out (at least one)."""
    from django.conf import settings

    return settings.GRIDNODE_TORCH_THREADS or max(1, (os.cpu_count() or 1) // processes)


# How an inference process allocates memory. glibc's malloc, left to itself, gave the small ResNet's
# activations back to the kernel after each inference and faulted them in again on the next: 740-1,060 page
# faults and 1.3-1.8 ms of kernel time per image, 17.7-18.9 ms of CPU in all (one core, in process). Tuned
# to keep chunks up to 4 MiB in its heap, and up to 64 MiB of free heap, glibc took 16.0-17.3 ms with no
# faults; jemalloc took 14.9-15.4 ms. Larger chunks still go back at once: kept in the heap (a 32 MiB
# threshold), 50 chunks of 10 MiB stayed in the process's data size after they were freed.
# jemalloc runs with retain:false, so the memory it gives back also leaves the data size, which RLIMIT_DATA
# and _retains_too_much count: with its default it kept 650 MiB of address space after freeing 500 MiB, and
# the process was replaced. tests/models_app/test_allocator.py holds both to it.
GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864"
JEMALLOC_CONF = "retain:false"


def allocator_environment(choice: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to the pool's environment so that its processes allocate with `choice`
    (GRIDNODE_INFERENCE_ALLOCATOR): jemalloc when asked for and installed, else glibc, tuned.

    An operator's own LD_PRELOAD and MALLOC_CONF are kept (theirs win where they set the same option), and
    so is their GLIBC_TUNABLES.
    """
    library = ctypes.util.find_library("jemalloc") if choice == "jemalloc" else None
    if library:
        return {
            "LD_PRELOAD": " ".join(filter(None, [library, environ.get("LD_PRELOAD")])),
            "MALLOC_CONF": ",".join(filter(None, [JEMALLOC_CONF, environ.get("MALLOC_CONF")])),
        }
    return {"GLIBC_TUNABLES": environ.get("GLIBC_TUNABLES") or GLIBC_TUNABLES}


def allocator_in_use() -> str:
    """Which allocator this process runs with: jemalloc (it exports mallctl) or glibc."""
    return "jemalloc" if hasattr(ctypes.CDLL(None), "mallctl") else "glibc"


# --- An inference process ---------------------------------------------------------------------------


def _data_bytes() -> int:
    """This process's data segment (what RLIMIT_DATA counts): heap and private anonymous mappings."""
    with open("/proc/self/statm", "rb") as statm:
        fields = statm.read().split()
    return int(fields[5]) * resource.getpagesize()


# An inference process's data size once its models are loaded: each inference may allocate
# GRIDNODE_INFERENCE_MEMORY_BYTES above it (not above what earlier inferences left behind, or the limit
# would ratchet up request by request), and a process that keeps more than _MAX_RETAINED_BYTES above it
# after answering is replaced.
_floor = {"bytes": 0}
_MAX_RETAINED_BYTES = 256 * 1024**2


@contextlib.contextmanager
def bounded(*, seconds: float, memory_bytes: int):
    """Kill this process when the block runs past `seconds`; fail its allocations past `memory_bytes` above
    the process's floor (its data size with its models loaded).

    The timer's signal keeps its default action, termination, which no model code can catch or delay.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (_floor["bytes"] + memory_bytes, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))


def serve_connections(listener: socket.socket) -> None:
    """An inference process's life: one connection, one request, one answer, until it must be replaced."""
    from django.conf import settings

    from gridnode.cache import ArchiveCache
    from models_app.executor import FrameError, receive_frame, send_frame

    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A model's warnings carry text it chose; they are not the operator's log.
    warnings.simplefilter("ignore")
    cache: ArchiveCache[LoadedModel] = ArchiveCache(settings.GRIDNODE_MODEL_CACHE_SIZE)
    _floor["bytes"] = _data_bytes()
    idle = _IdleWait(listener)
    while True:
        connection = idle.next_connection()
        recycle = False
        try:
            connection.settimeout(30)  # the request follows its connection at once
            request = receive_frame(connection, max_blob_bytes=settings.GRIDNODE_MAX_UPLOAD_BYTES)
            if request is None:
                continue  # a probe: the pool is up
            connection.settimeout(None)
            reply, recycle = handle(request, cache)
            connection.settimeout(30)
            send_frame(connection, reply)
        except (FrameError, OSError):
            pass  # the caller is gone or spoke nonsense; nothing to answer
        finally:
            connection.close()
        if recycle:
            os._exit(0)


class _IdleWait:
    """Where an idle inference process waits for its next connection: the first idle process takes it.

    A blocking accept() on a socket shared by several processes hands connections round-robin, so at light
    load every request met the process whose caches had gone cold the longest: 14.0 ms of CPU per inference
    of the small ResNet with four processes, against 11.6 ms with one. Waiting in an epoll with
    EPOLLEXCLUSIVE instead, the kernel wakes the idle process that registered first, so the same few
    processes take the requests while load allows, with the model and its activations still in cache.
    The listening socket is non-blocking (Supervisor): a process woken for a connection another took
    just waits again.
    """

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.epoll = select.epoll()
        self.epoll.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)

    def next_connection(self) -> socket.socket:
        while True:
            self.epoll.poll()
            try:
                connection, _ = self.listener.accept()
            except BlockingIOError:
                continue
            connection.setblocking(True)
            return connection


def handle(request, cache) -> tuple:
    """The reply frame for one request, and whether this process must be replaced after sending it."""
    from django.conf import settings

    from gridnode.errors import GridError
    from models_app import archives
    from models_app.executor import LIMIT_SETTINGS, MEMORY_STATUS, Frame
    from models_app.inference import OPERATIONS

    header = request.header
    limits = header.get("limits") or {}
    for name in LIMIT_SETTINGS:
        if isinstance(limits.get(name), int):
            setattr(settings, name, limits[name])
    cache.capacity = settings.GRIDNODE_MODEL_CACHE_SIZE
    model, body = header.get("model") or {}, header.get("body") or {}
    operation = OPERATIONS.get(header.get("op"))
    stats = {"cache_hit": False, "evictions": cache.evictions, "runs": archives.LoadedModel.runs}
    try:
        if header.get("op") == "check" and isinstance(model, dict):
            _read_archive(model)  # an upload: proved to load, kept nowhere
            return Frame({"status": 200, "content_type": "", "headers": {}}, [b""]), _retains_too_much()
        if operation is None or not isinstance(model, dict):
            raise GridError("The inference process got a request it does not know.", status=500)
        key = (str(model.get("id")), str(model.get("archive")))
        loaded = cache.get(key)
        stats["cache_hit"] = loaded is not None
        if loaded is None:
            loaded = _read_archive(model)
            cache.put(key, loaded)
            _floor["bytes"] = max(_floor["bytes"], _data_bytes())
        with bounded(
            seconds=settings.GRIDNODE_INFERENCE_TIMEOUT, memory_bytes=settings.GRIDNODE_INFERENCE_MEMORY_BYTES
        ):
            status, content_type, headers, payload = operation(loaded, model["id"], body, request.blobs)
    except GridError as error:
        return _error_frame(error.status, error.message, error.fields, stats, cache), _retains_too_much()
    except Exception as error:
        if archives.is_out_of_memory(error):
            limit = settings.GRIDNODE_INFERENCE_MEMORY_BYTES
            message = (
                f"The inference needed more memory than this node allows per inference ({limit} bytes, "
                "GRIDNODE_INFERENCE_MEMORY_BYTES)."
            )
            return _error_frame(MEMORY_STATUS, message, {}, stats, cache), True
        if isinstance(error, RecursionError):
            return _error_frame(400, "The data is nested too deeply.", {}, stats, cache), False
        if archives.LoadedModel.runs != stats["runs"]:
            # The model ran and answered something this node cannot send (a meta tensor, a complex one).
            message = f"The model's output cannot be answered ({type(error).__name__})."
            return _error_frame(400, message, {}, stats, cache), _retains_too_much()
        logger.exception("an inference failed in the inference process")
        return _error_frame(500, "The inference failed inside the node.", {}, stats, cache), _retains_too_much()
    reply = {
        "status": status,
        "content_type": content_type,
        "headers": headers,
        **_cache_report(stats, cache),
    }
    return Frame(reply, [payload]), _retains_too_much()


def _retains_too_much() -> bool:
    """Whether this process kept so much of what its inferences allocated that it should be replaced."""
    return _data_bytes() > _floor["bytes"] + _MAX_RETAINED_BYTES


def _error_frame(status: int, message: str, fields: dict, stats: dict, cache):
    from models_app.executor import MAX_ERROR_CHARS, Frame

    cut = message[:MAX_ERROR_CHARS]
    return Frame({"status": status, "error": cut, "fields": fields, **_cache_report(stats, cache)})


def _cache_report(stats: dict, cache) -> dict:
    from models_app.archives import LoadedModel

    return {
        "ran": LoadedModel.runs != stats["runs"],
        "cache": {
            "hit": stats["cache_hit"],
            "evictions": cache.evictions - stats["evictions"],
            "models": len(cache),
            "process": os.getpid(),
        },
    }


def _read_archive(model: dict):
    """A model loaded from its archive and checked (as on every load), within the load bound of its size:
    archives.load_seconds, and twice its size plus GRIDNODE_INFERENCE_MEMORY_BYTES of memory."""
    from django.conf import settings

    from gridnode.errors import NotFound
    from models_app import archives

    path, kind = model.get("path"), str(model.get("kind"))
    size = archives.archive_size(path)
    if path and model.get("sha256"):
        _check_local_copy(Path(path), str(model["sha256"]))
    try:
        with bounded(
            seconds=archives.load_seconds(size), memory_bytes=2 * size + settings.GRIDNODE_INFERENCE_MEMORY_BYTES
        ):
            if path:
                with open(path, "rb") as source:
                    return archives.load_archive(source, kind)
            from django.core.files.storage import default_storage

            with default_storage.open(str(model.get("archive")), "rb") as stored:
                return archives.load_archive(archives.seekable(stored), kind)
    except FileNotFoundError:
        # Deleted between the web process's query and this read: as if the query had come a moment later.
        raise NotFound("Model not found.") from None


def _check_local_copy(path, sha256: str) -> None:
    """Before loading a replica's local copy of an archive on the object store, check it is still the
    uploaded bytes (gridnode/objectstore.py); a damaged copy is removed, to be fetched again."""
    from gridnode.errors import GridError, NotFound
    from gridnode.objectstore import file_sha256, remove_copy

    try:
        actual = file_sha256(path)
    except FileNotFoundError:
        raise NotFound("Model not found.") from None
    if actual != sha256:
        remove_copy(path)
        raise GridError(
            "This node's local copy of the model's archive was damaged; it was removed and is fetched again "
            "from the object store on the next request.",
            status=503,
        )


# --- The supervisor ---------------------------------------------------------------------------------


class Supervisor:
    """Keeps `size` inference processes running on one listening socket, and logs what they print."""

    def __init__(self, listener: socket.socket, size: int) -> None:
        self.listener = listener
        self.size = size
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (output pipe, started)
        self.partial: dict[int, bytes] = {}
        self.budget: dict[int, tuple[float, int]] = {}  # pid -> (second, lines logged in it)
        self.pause = 0.0
        self.stopping = False

    def run(self) -> None:
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "lifeline")
        while not self.stopping:
            self._reap()
            while len(self.children) < self.size and not self.stopping:
                self._spawn()
            for key, _ in self.selector.select(timeout=0.5):
                if key.data == "lifeline":
                    if not os.read(key.fd, 4096):
                        self.stopping = True
                else:
                    self._read_output(key.fd, key.data)
        self.stop()

    def stop(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def _spawn(self) -> None:
        if self.pause:
            time.sleep(self.pause)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the inference process
            try:
                os.close(read_end)
                os.dup2(write_end, 1)
                os.dup2(write_end, 2)
                os.close(write_end)
                _die_with_parent()
                serve_connections(self.listener)
            finally:
                os._exit(1)
        os.close(write_end)
        os.set_blocking(read_end, False)
        self.children[pid] = (read_end, time.monotonic())
        self.selector.register(read_end, selectors.EVENT_READ, pid)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.children.pop(pid, None)
            if entry is None:
                continue
            read_end, started = entry
            with contextlib.suppress(OSError):
                self._read_output(read_end, pid)
            self.selector.unregister(read_end)
            os.close(read_end)
            self._flush(pid)
            self.budget.pop(pid, None)
            # Stopped at its deadline or replaced on purpose (exit 0) is normal; dying young otherwise
            # (a broken install, a crash at start) would make a loop: restart it ever more slowly.
            expected = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM
            expected = expected or (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
            quick = not expected and time.monotonic() - started < _QUICK_EXIT_SECONDS
            self.pause = min(5.0, max(0.1, self.pause * 2)) if quick else 0.0
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
                logger.warning("inference process %d stopped at its deadline; replacing it", pid)
            elif os.WIFSIGNALED(status):
                logger.warning("inference process %d was killed by signal %d; replacing it", pid, os.WTERMSIG(status))
            elif os.WEXITSTATUS(status) != 0:
                logger.warning("inference process %d exited with code %d; replacing it", pid, os.WEXITSTATUS(status))

    def _read_output(self, fd: int, pid: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            return
        text = self.partial.pop(pid, b"") + chunk
        *lines, rest = text.split(b"\n")
        if len(rest) > _MAX_LINE_CHARS:
            lines.append(rest)
            rest = b""
        if rest:
            self.partial[pid] = rest
        for line in lines:
            self._log_line(pid, line)

    def _flush(self, pid: int) -> None:
        rest = self.partial.pop(pid, b"")
        if rest:
            self._log_line(pid, rest)

    def _log_line(self, pid: int, line: bytes) -> None:
        """One line a process printed, as the message of one log record (the JSON formatter escapes it)."""
        second, count = self.budget.get(pid, (0.0, 0))
        now = time.monotonic()
        if now - second >= 1.0:
            second, count = now, 0
        count += 1
        self.budget[pid] = (second, count)
        if count > _MAX_LINES_PER_SECOND:
            return
        text = line.decode("utf-8", "replace")
        if len(text) > _MAX_LINE_CHARS:
            text = text[:_MAX_LINE_CHARS] + "…"
        logger.warning("inference process %d printed: %s", pid, text)


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the supervisor dies (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:
        os._exit(0)


def _warm_up(torch) -> None:
    """Save, load and run a tiny model of each kind once, before the processes are forked.

    torch imports most of what torch.export.load needs (sympy, the serializer, dynamo's pieces) on its
    first call, which took 5.4 s on a busy 2-core machine: inside an inference process it counted against
    the first upload's or inference's load bound (5 s for a small archive), which refused a valid model.
    Done here, every process inherits it ready.
    """
    model = torch.nn.Sequential(torch.nn.Linear(2, 1)).eval()
    example = (torch.zeros(1, 2),)
    for save, load in (
        (lambda buffer: torch.export.save(torch.export.export(model, example), buffer), torch.export.load),
        (lambda buffer: torch.jit.save(torch.jit.script(model), buffer), torch.jit.load),
    ):
        buffer = io.BytesIO()
        save(buffer)
        buffer.seek(0)
        loaded = load(buffer)
        with torch.no_grad():
            (loaded.module() if hasattr(loaded, "module") else loaded)(*example)


def main(address: str) -> int:
    """Set up once (Django, torch, the node's code), listen, and supervise the inference processes."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridnode.settings")
    import django

    django.setup()
    import torch

    from models_app import inference  # noqa: F401  (imported once here, so every process starts warm)

    _warm_up(torch)
    size = pool_size()
    torch.set_num_threads(torch_threads(size))
    logger.info(
        "%d inference processes, %d torch threads each, allocating with %s",
        size,
        torch.get_num_threads(),
        allocator_in_use(),
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(b"\0" + address.encode())
    listener.listen(_BACKLOG)
    listener.setblocking(False)  # the processes wait in epoll (_IdleWait)
    supervisor = Supervisor(listener, size)

    def terminate(signum, frame):
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, terminate)
    supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
