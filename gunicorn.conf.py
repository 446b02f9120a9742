"""Gunicorn settings for the grid node; `gunicorn gridnode.wsgi` reads this file from the repo root.

Every value can be overridden from the environment (or on gunicorn's command line). Defaults were chosen
by measurement on a 2-core machine (docs/operations.md).
"""

import os
from pathlib import Path

from gridnode.env import env_int, env_path, env_str
from smpc_app.identity import key_path as smpc_key_path

_cores = os.cpu_count() or 1
_data_dir = env_path("GRIDNODE_DATA_DIR", Path(__file__).resolve().parent / "var")

bind = env_str("GRIDNODE_BIND", "127.0.0.1:8000")
# One more than the cores: a worker waiting on its database round trip leaves its core to another
# (measured on 2 cores, c=8: 2 workers 3,134 req/s, 3 workers 3,259, 4 workers 2,961-3,178, 6 workers 2,986).
workers = env_int("GRIDNODE_WORKERS", _cores + 1, minimum=1)
# gthread, accepting only while a thread is free (gridnode/workers.py).
worker_class = env_str("GRIDNODE_WORKER_CLASS", "gridnode.workers.ThreadWorker")
# A request thread mostly waits: for the database, and for the inference process that runs its model
# (models_app/executor.py). Four threads let a worker hand its next requests to the pool's one queue
# meanwhile (measured on 2 cores, reference MLP, c=8: 1 thread ~830 req/s, 4 threads ~1,000).
# An SMPC worker's evaluation waits in its thread while its peer's messages arrive on other requests,
# and gunicorn hands connections to processes unevenly (4 clients at once could all land on one), so a
# node with an SMPC key (manage.py smpc_identity) gets threads to spare (docs/encrypted-inference.md).
threads = env_int("GRIDNODE_THREADS", 16 if smpc_key_path(_data_dir).exists() else 4, minimum=1)
# Each process runs at most threads - 1 evaluations, so one thread is always free for exchanges.
os.environ.setdefault("GRIDNODE_SMPC_MAX_SESSIONS", str(max(1, threads - 1)))
# Clients such as ApacheBench and requests.Session reuse connections.
keepalive = env_int("GRIDNODE_KEEPALIVE", 5)
# Large model uploads and first loads take longer than gunicorn's 30 s default.
timeout = env_int("GRIDNODE_TIMEOUT", 300, minimum=1)
graceful_timeout = 30
# Each worker (for encrypted inference and tensor parsing) and each inference process runs torch with a
# share of the cores, so they do not fight over them.
os.environ.setdefault("GRIDNODE_TORCH_THREADS", str(max(1, _cores // workers)))
accesslog = os.environ.get("GRIDNODE_ACCESS_LOG") or None
# The client address nginx forwarded ("-" when none, or when the peer is not trusted), then the peer's
# (empty on a Unix socket), then gunicorn's default fields.
access_log_format = '%({x-forwarded-for}i)s %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
# gunicorn's own lines (its start, its workers, a request it could not parse, which quotes the request) as
# the node's other lines are: one JSON object each, written to standard error. The access log, when
# GRIDNODE_ACCESS_LOG asks for one, keeps its own format and file.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "gridnode.jsonlog.JsonLineFormatter"}},
    "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["json"]},
    "loggers": {"gunicorn.error": {"handlers": ["json"], "propagate": False}},
}
# gunicorn's default maps a `SCRIPT_NAME` (and `PATH_INFO`) header from any peer in forwarded_allow_ips
# (loopback included) onto the WSGI environ: `SCRIPT_NAME: /x` served `/x/models` as `/models` and
# answered gunicorn's own 500 page on a mismatch. No proxy of ours sends them, so none is honoured;
# with header_map's default ("drop") such headers are dropped.
forwarder_headers = ""
# X-Forwarded-* are trusted from the peers gunicorn trusts (FORWARDED_ALLOW_IPS, default loopback; a Unix
# socket's peer always): from anyone else pre_request drops them, so whatever reads them (the access log's
# client address, Django under GRIDNODE_BEHIND_TLS_PROXY) follows the same rule.
_FORWARDED = ("X-FORWARDED-FOR", "X-FORWARDED-PROTO", "X-FORWARDED-HOST", "X-FORWARDED-PORT", "FORWARDED")


def pre_request(worker, req):
    """Drop forwarding headers a peer outside forwarded_allow_ips sent (docs/operations.md)."""
    if not req._peer_is_trusted_proxy():  # gunicorn's own test, as for its secure_scheme_headers
        req.headers = [(name, value) for name, value in req.headers if name not in _FORWARDED]


def child_exit(server, worker):
    """With PROMETHEUS_MULTIPROC_DIR set, forget a finished worker's live gauges (docs/operations.md)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_starting(server):
    """Start the node's inference processes once, for all the workers (docs/security.md).

    The workers find the pool through the environment they inherit, and wait for it on their first
    inference if it is still starting (it imports torch while they do); it stops when the master does.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gridnode.settings")
    from models_app.executor import start_pool

    server.inference_pool = start_pool()


def on_exit(server):
    """Stop the inference processes with the master."""
    pool = getattr(server, "inference_pool", None)
    if pool is not None:
        pool.terminate()
        pool.wait(timeout=10)
