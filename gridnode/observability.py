"""Prometheus metrics, the `/metrics` view, and one structured log line per request.

One middleware does both per-request jobs, so a request pays for one clock pair and a few dictionary
lookups: metrics are labelled by the resolved route's name (never the raw path, whose ids would make a
series per model), and the log line is built only when its level is enabled. Nothing touches the
database per request; the stored-object counts are read with a COUNT query when Prometheus scrapes.

Several worker processes (gunicorn): with PROMETHEUS_MULTIPROC_DIR set in the environment before the
node starts, every worker writes its samples to files in that folder and `/metrics` answers the sum
over all workers, whichever worker serves the scrape. Without it, each worker answers its own numbers.
"""

import logging
import os
import threading
from time import perf_counter

from django.apps import apps
from django.http import HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from gridnode.errors import error_response

logger = logging.getLogger(__name__)
request_log = logging.getLogger("gridnode.requests")

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
# `*_created` timestamps double the series for nothing Prometheus' text format needs.
disable_created_metrics()
# Routes whose successful answers are inferences of the model named in the path.
INFERENCE_ROUTES = frozenset({"model-inference", "model-inference-alias", "v2-model-infer"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUESTS = Counter(
    "gridnode_http_requests",
    "HTTP requests answered, by method, endpoint (the route's name) and status code.",
    ["method", "endpoint", "status"],
)
REQUEST_SECONDS = Histogram(
    "gridnode_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, endpoint (the route's name) and status code.",
    ["method", "endpoint", "status"],
    buckets=_LATENCY_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    "gridnode_inference_duration_seconds",
    "Time to answer a successful inference request (seed or v2 route), by model id.",
    ["model_id"],
    buckets=_LATENCY_BUCKETS,
)

_CACHE_HELP = {
    "hits": "Inference lookups that found the model already loaded in an inference process's cache.",
    "misses": "Inference lookups that had to load the model from storage.",
    "evictions": "Loaded models dropped from an inference process's cache to stay within GRIDNODE_MODEL_CACHE_SIZE.",
}
_CACHE_SIZE_HELP = "Models loaded in the inference processes (the largest live worker's figure in multiprocess mode)."


def _model_cache():
    # Imported on first use: this module is imported while logging is set up, before the apps.
    from models_app.executor import pool_cache

    return pool_cache


class ModelCacheCollector:
    """The model cache's counters and size, read from the cache when Prometheus scrapes (one process)."""

    def describe(self):
        return self._families(None)

    def collect(self):
        return self._families(_model_cache())

    def _families(self, cache):
        for name, text in _CACHE_HELP.items():
            family = CounterMetricFamily(f"gridnode_model_cache_{name}", text)
            if cache is not None:
                family.add_metric([], getattr(cache, name))
            yield family
        size = GaugeMetricFamily("gridnode_model_cache_models", _CACHE_SIZE_HELP)
        if cache is not None:
            size.add_metric([], len(cache))
        yield size


class CacheCounterSync:
    """Multiprocess mode: copies this worker's cache counters into the shared metric files.

    A collector only sees the process that serves the scrape, so each worker adds what its cache
    counted since the last request; reading three integers is all a request pays when nothing moved.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._seen = {name: 0 for name in _CACHE_HELP}
        self._counters = {name: Counter(f"gridnode_model_cache_{name}", text) for name, text in _CACHE_HELP.items()}
        self._size = Gauge("gridnode_model_cache_models", _CACHE_SIZE_HELP, multiprocess_mode="livemax")

    def __call__(self) -> None:
        cache = _model_cache()
        if all(getattr(cache, name) == seen for name, seen in self._seen.items()):
            return
        with self._lock:
            for name, counter in self._counters.items():
                now = getattr(cache, name)
                if now > self._seen[name]:
                    counter.inc(now - self._seen[name])
                self._seen[name] = now
            self._size.set(len(cache))


class StoredObjectsCollector:
    """How many models and datasets the node stores: one COUNT query each, at scrape time."""

    def describe(self):
        yield GaugeMetricFamily("gridnode_stored_models", "Models hosted on this node.")
        yield GaugeMetricFamily("gridnode_stored_datasets", "Datasets stored on this node.")

    def collect(self):
        for metric, app_label, model_name, text in (
            ("gridnode_stored_models", "models_app", "HostedModel", "Models hosted on this node."),
            ("gridnode_stored_datasets", "datasets_app", "Dataset", "Datasets stored on this node."),
        ):
            try:
                model = apps.get_model(app_label, model_name)
                count = model.objects.count()
            except LookupError:
                continue  # that app is not installed
            except Exception as exc:
                # A scrape still answers the other metrics while the database is down (readiness says so).
                logger.warning("metrics: counting %s failed: %s", model_name, type(exc).__name__)
                continue
            yield GaugeMetricFamily(metric, text, value=count)


sync_cache_counters = CacheCounterSync() if MULTIPROCESS else None
if not MULTIPROCESS:
    REGISTRY.register(ModelCacheCollector())
    REGISTRY.register(StoredObjectsCollector())


def metrics(request):
    """GET /metrics: every metric in Prometheus' text format."""
    if request.method not in ("GET", "HEAD"):
        response = error_response(f"Method {request.method[:16]} not allowed.", status_code=405)
        response["Allow"] = "GET, HEAD"
        return response
    if MULTIPROCESS:
        if sync_cache_counters is not None:  # always, under MULTIPROCESS
            sync_cache_counters()
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(StoredObjectsCollector())
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


# The labelled series of each (method, endpoint, status) seen, so a request skips the label lookups.
_request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
_inference_series: dict[str, Histogram] = {}


def observe_request(
    *, method: str, path: str, endpoint: str, status: int, seconds: float, model_id: str | None = None
) -> None:
    """Count, time and log one answered request.

    The middleware calls this for every request Django answers; code that answers requests before
    Django (a WSGI fast path) calls it too, with the route name Django would have resolved, so those
    requests show in the metrics and the log like any other.
    """
    method_label = method if method in _METHODS else "other"
    series = _request_series.get((method_label, endpoint, status))
    if series is None:
        series = _request_series[(method_label, endpoint, status)] = (
            REQUESTS.labels(method_label, endpoint, str(status)),
            REQUEST_SECONDS.labels(method_label, endpoint, str(status)),
        )
    series[0].inc()
    series[1].observe(seconds)
    if status == 200 and model_id and endpoint in INFERENCE_ROUTES:
        timer = _inference_series.get(model_id)
        if timer is None:
            timer = _inference_series[model_id] = INFERENCE_SECONDS.labels(model_id)
        timer.observe(seconds)
    if sync_cache_counters is not None:
        sync_cache_counters()
    level = logging.ERROR if status >= 500 else logging.INFO
    if request_log.isEnabledFor(level):
        fields = {
            "method": method[:16],
            "path": path[:512],  # the path only: never the query string or the body
            "route": endpoint,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
        }
        if model_id:
            fields["model_id"] = model_id[:128]  # as long as a valid id: a path may carry megabytes
        # handle(makeRecord(...)) rather than log(): the caller's file and line say nothing here, and
        # looking them up is most of what a log call costs.
        request_log.handle(
            request_log.makeRecord(request_log.name, level, "", 0, "request", (), None, extra={"fields": fields})
        )


class RequestObservabilityMiddleware:
    """Counts and times every request by route and status, and logs it as one JSON line.

    Placed first in MIDDLEWARE, so it times the whole stack and sees the final status (Django turns
    exceptions into responses inside it).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = perf_counter()
        response = self.get_response(request)
        seconds = perf_counter() - started
        try:
            match = request.resolver_match
            observe_request(
                method=request.method or "",
                path=request.path,
                endpoint=match.view_name if match is not None else "unmatched",
                status=response.status_code,
                seconds=seconds,
                model_id=match.kwargs.get("model_id") if match is not None else None,
            )
        except Exception:  # telemetry never fails a request that was answered
            logger.exception("recording request metrics failed")
        return response
