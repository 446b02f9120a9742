"""The one error shape: every failure on every path answers JSON `{"error": "..."}`.

Domain code raises `GridError` subclasses; DRF views route them through `handle_api_exception`,
and Django-level failures (no route, crashes) go through the JSON handlers in `urls.py`.
"""

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation, ValidationError
from django.http import Http404, JsonResponse, UnreadablePostError
from rest_framework import exceptions as drf_exceptions

logger = logging.getLogger(__name__)


class GridError(Exception):
    """A failure with a status code and a message that is safe to show the caller."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None, **fields):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        # Endpoint-specific keys that the contract puts beside "error" (e.g. "success": false).
        self.fields = fields

    def response(self, **contract_fields) -> JsonResponse:
        return error_response(self.message, status_code=self.status, **{**contract_fields, **self.fields})


class BadRequest(GridError):
    status = 400


class Forbidden(GridError):
    status = 403


class NotFound(GridError):
    status = 404


class Conflict(GridError):
    status = 409


class PayloadTooLarge(GridError):
    status = 413


class BadGateway(GridError):
    """Another node this request needed answered with an error or broke the protocol."""

    status = 502


class ServiceUnavailable(GridError):
    """This node is not set up for what was asked (for example SMPC without its secret)."""

    status = 503


class GatewayTimeout(GridError):
    """Another node this request needed did not answer in time."""

    status = 504


def error_response(message: str, *, status_code: int, **fields) -> JsonResponse:
    """A JSON error body: the fields the contract asks for, then the message under "error"."""
    return JsonResponse({**fields, "error": message}, status=status_code)


def _drf_message(exc: drf_exceptions.APIException) -> str:
    if isinstance(exc, drf_exceptions.ParseError):
        # DRF's parse messages can quote the body; never echo the caller's payload.
        return "The request body could not be parsed as its Content-Type says."
    if isinstance(exc, drf_exceptions.UnsupportedMediaType):
        return "Unsupported Content-Type: send application/json, multipart/form-data or a form."
    detail = exc.detail
    if isinstance(detail, list | dict):
        return "Invalid request."
    return str(detail)


def handle_api_exception(exc: Exception, context: dict) -> JsonResponse | None:
    """DRF's exception handler: map every known failure to the one error shape, with the keys the
    contract puts beside `error` on the view's answers (`error_fields`, gridnode.auth.requires)."""
    view, request = context.get("view"), context.get("request")
    fields = {}
    if view is not None and request is not None:
        from gridnode.auth import declared_error_fields  # gridnode.auth raises this module's errors

        fields = declared_error_fields(view, request.method)
    if isinstance(exc, GridError):
        return exc.response(**fields)
    if isinstance(exc, RequestDataTooBig):
        return error_response("The request body is larger than this node accepts.", status_code=413, **fields)
    if isinstance(exc, UnreadablePostError):
        # The client stopped sending mid-body (gridnode.uploads.WholeBodies): nothing is stored, no 500.
        return error_response("The request body ended before its Content-Length.", status_code=400, **fields)
    if isinstance(exc, ValidationError):
        # A row's own validators (full_clean) refused what the request would store.
        return error_response(" ".join(exc.messages), status_code=400, **fields)
    if isinstance(exc, drf_exceptions.APIException):
        response = error_response(_drf_message(exc), status_code=exc.status_code, **fields)
        if isinstance(exc, drf_exceptions.MethodNotAllowed) and view is not None:
            response["Allow"] = ", ".join(view.allowed_methods)
        return response
    if isinstance(exc, Http404):
        return error_response("Not found.", status_code=404, **fields)
    if isinstance(exc, PermissionDenied):
        return error_response("Permission denied.", status_code=403, **fields)
    if isinstance(exc, SuspiciousOperation):
        return error_response("Bad request.", status_code=400, **fields)
    # Unknown failures fall through to Django, which logs them and answers with `server_error`.
    return None


def bad_request(request, exception=None):
    """Django's handler400, as JSON."""
    if isinstance(exception, RequestDataTooBig):
        return error_response("The request body is larger than this node accepts.", status_code=413)
    return error_response("Bad request.", status_code=400)


def permission_denied(request, exception=None):
    """Django's handler403, as JSON."""
    return error_response("Permission denied.", status_code=403)


def csrf_failure(request, reason=""):
    """Django's CSRF failure view (admin forms posted without their token), as JSON."""
    return error_response("CSRF verification failed: reload the form and submit it again.", status_code=403)


def page_not_found(request, exception=None):
    """Django's handler404, as JSON."""
    return error_response("Not found.", status_code=404)


def server_error(request):
    """Django's handler500, as JSON."""
    return error_response("Internal server error.", status_code=500)
