"""Liveness and readiness probes for load balancers, Kubernetes and v2 clients; no token needed.

Liveness only says the process answers (it touches nothing, so a slow database never gets a live
node restarted). Readiness says the node can do its work: the database answers a trivial query and
the storage takes a write. Both are plain Django views, outside DRF, so no authentication setting
ever puts them behind a token.
"""

import logging
import uuid

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from gridnode.errors import error_response

logger = logging.getLogger(__name__)

_READ_METHODS = ("GET", "HEAD")


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_storage() -> None:
    name = default_storage.save(f"readiness-probe-{uuid.uuid4().hex}.tmp", ContentFile(b"ok"))
    default_storage.delete(name)


# Name -> (check, what a failure means), in the order they run.
CHECKS = {
    "database": (_check_database, "the database does not answer"),
    "storage": (_check_storage, "the storage is not writable"),
}


def readiness_checks() -> tuple[dict[str, str], list[str]]:
    """Every check's outcome ("ok" or "failed") and what the failures mean."""
    outcomes, failures = {}, []
    for name, (check, meaning) in CHECKS.items():
        try:
            check()
        except Exception as exc:  # any failure means not ready; the log says which, without details to callers
            logger.warning("readiness check %s failed: %s", name, type(exc).__name__)
            outcomes[name] = "failed"
            failures.append(meaning)
        else:
            outcomes[name] = "ok"
    return outcomes, failures


def _method_not_allowed(request) -> JsonResponse | None:
    if request.method in _READ_METHODS:
        return None
    response = error_response(f"Method {request.method[:16]} not allowed.", status_code=405)
    response["Allow"] = ", ".join(_READ_METHODS)
    return response


def _not_ready(outcomes: dict, failures: list[str], **fields) -> JsonResponse:
    return error_response(f"Not ready: {'; '.join(failures)}.", status_code=503, **fields, checks=outcomes)


@csrf_exempt
def liveness(request):
    """GET /healthz: 200 while the process answers."""
    return _method_not_allowed(request) or JsonResponse({"status": "live"})


@csrf_exempt
def readiness(request):
    """GET /readyz: 200 when the database and storage work, else 503 naming the failed check."""
    refused = _method_not_allowed(request)
    if refused:
        return refused
    outcomes, failures = readiness_checks()
    if failures:
        return _not_ready(outcomes, failures, status="not ready")
    return JsonResponse({"status": "ready", "checks": outcomes})


@csrf_exempt
def v2_live(request):
    """GET /v2/health/live: the Open Inference Protocol's liveness answer."""
    return _method_not_allowed(request) or JsonResponse({"live": True})


@csrf_exempt
def v2_ready(request):
    """GET /v2/health/ready: the Open Inference Protocol's readiness answer, with the same checks."""
    refused = _method_not_allowed(request)
    if refused:
        return refused
    outcomes, failures = readiness_checks()
    if failures:
        return _not_ready(outcomes, failures, ready=False)
    return JsonResponse({"ready": True, "checks": outcomes})
