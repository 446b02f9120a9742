"""The gunicorn worker the node runs (gunicorn.conf.py: worker_class)."""

import json

from gunicorn import util
from gunicorn.workers import gthread


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it cannot parse (a bad request line, header or chunk), as JSON like
    every other error of the node. gunicorn's own answer is an HTML page quoting the request (`mesg`); this
    one says only what the status says, and the request goes to the log, inside one JSON line."""
    body = json.dumps({"error": f"The request could not be read as HTTP ({status_int} {reason})."}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn's workers answer through util.write_error; the node's only worker class is this module's.
util.write_error = write_json_error


class ThreadWorker(gthread.ThreadWorker):
    """gunicorn's gthread worker, accepting a new connection only while one of its threads is free.

    gthread accepts up to `worker_connections` (1,000) connections whatever its threads are doing, and
    queues their requests behind the running ones. When every thread of one process waits (on inference
    processes that all run a model until its deadline, say), a `/healthz` that this process happened to
    accept waited with them, while the other processes had threads to spare. Left in the listening
    socket's queue instead, a connection goes to the first process with a free thread. Requests on
    connections a process already holds (keep-alive) still queue in that process.
    """

    _accepting: bool  # gthread.ThreadWorker's own (its stubs leave it out)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.running = 0  # requests handed to the thread pool and not finished; only the main thread counts

    def enqueue_req(self, conn):
        self.running += 1
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        self.running -= 1
        super().finish_request(conn, fs)

    def wait_for_and_dispatch_events(self, timeout):
        # run() has just enabled accepting if it is below worker_connections; narrow that to a free thread.
        self.set_accept_enabled(self._accepting and self.running < self.cfg.threads)
        super().wait_for_and_dispatch_events(timeout)
