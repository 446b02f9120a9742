"""The outline of the node's WSGI fast paths: hot requests answered in front of Django.

A fast path answers a few requests whose every rule it can follow itself (models_app: JSON inference;
smpc_app: the workers' round exchanges), and hands every other request to Django unchanged. What they
all do is written here once: which requests they may take at all (a POST to their paths, no query string,
no cookie, a host Django would accept, a Content-Length, no token to check), reading and putting back the
body, Django's request signals (database connections), the answer's headers, and the request's metrics and
log line. A subclass says which paths it serves and answers.

A fast path skips Django's middleware and DRF's authentication and permission classes, so it follows
them by hand: FOLLOWS is what it was written against, and tests/gridnode/test_fastpath_follows.py fails,
naming the fast paths, when the settings move away from it.
"""

import http
import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from time import perf_counter

from django.core import signals

from gridnode import auth
from gridnode.errors import GridError
from gridnode.http import SECURITY_HEADERS, host_allowed
from gridnode.observability import observe_request

logger = logging.getLogger(__name__)

# The settings whose effect every fast path reproduces (security headers, metrics and the request log,
# host checks) or decides to leave to Django (tokens, sessions, CSRF: a request that may need them goes there).
FOLLOWS = {
    "MIDDLEWARE": [
        "gridnode.observability.RequestObservabilityMiddleware",
        "django.middleware.security.SecurityMiddleware",
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    ],
    "DEFAULT_AUTHENTICATION_CLASSES": ["gridnode.auth.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["gridnode.auth.GroupPermission"],
}

Answer = tuple[int, str, list[tuple[str, str]], bytes]  # status, content type, extra headers, body

# WSGI status lines, made once: building one per request (HTTPStatus's lookup) cost about 0.6 µs a request.
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in http.HTTPStatus}


def content_length(environ) -> int | None:
    """The request's Content-Length as a number, or None when absent or not plainly one."""
    value = environ.get("CONTENT_LENGTH") or ""
    return int(value) if value.isascii() and value.isdigit() and len(value) < 16 else None


class FastPath:
    """WSGI middleware answering the POSTs to `paths` that `answer` can, handing the rest to `app`."""

    paths: re.Pattern  # matched against the whole PATH_INFO
    group: str  # the auth group of the routes it serves (gridnode.auth)
    # Whether Django's request signals go around every answer. A path whose answers mostly touch no database
    # sets it False and sends them, with `django_request`, around the steps that do.
    signals_around_every_answer = True

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        match = self.paths.fullmatch(environ.get("PATH_INFO", ""))
        if (
            match is None
            or environ.get("REQUEST_METHOD") != "POST"
            # Django decodes a query its own way and DRF reads ?format=; clients of these paths send none.
            or environ.get("QUERY_STRING")
            # Django's session and CSRF middleware answer cookies (a stale session's is cleared, with Vary:
            # Cookie); the programs that call these paths send none.
            or "HTTP_COOKIE" in environ
            or (length := content_length(environ)) is None
            or not auth.answers_without_a_token(self.group, environ)
            or not host_allowed(environ)
            or not self.takes(environ, length)
        ):
            return self.app(environ, start_response)
        started = perf_counter()
        around = self.django_request(environ) if self.signals_around_every_answer else nullcontext()
        try:
            with around:
                answer = self.answer(environ, match, length)
        except GridError as error:
            rendered = error.response()
            answer = (rendered.status_code, rendered["Content-Type"], [], rendered.content)
        if answer is None:
            return self.app(environ, start_response)
        status, content_type, headers, content = answer
        start_response(
            _STATUS_LINES[status],
            [("Content-Type", content_type), *headers, ("Content-Length", str(len(content))), *SECURITY_HEADERS],
        )
        try:
            observe_request(
                method="POST",
                path=environ["PATH_INFO"],
                endpoint=self.endpoint(environ["PATH_INFO"]),
                status=status,
                seconds=perf_counter() - started,
                **self.log_fields(match),
            )
        except Exception:  # telemetry never fails a request that was answered
            logger.exception("recording request metrics failed")
        return [content]

    def takes(self, environ, length: int) -> bool:
        """Whether this request is one `answer` can judge as Django would, before its body is read."""
        return True

    def answer(self, environ, match: re.Match, length: int) -> Answer | None:
        """The answer, or None to hand the request to Django (with its body, see `read_body`)."""
        raise NotImplementedError

    def endpoint(self, path: str) -> str:
        """The route name Django would resolve the path to, for metrics and the request log."""
        raise NotImplementedError

    def log_fields(self, match: re.Match) -> dict:
        """More fields of the request log line (e.g. the model id)."""
        return {}

    @contextmanager
    def django_request(self, environ) -> Iterator[None]:
        """Django's request signals around a step, as its handler sends them around a request: they close the
        database connections that are broken or past their age."""
        signals.request_started.send(sender=type(self), environ=environ)
        try:
            yield
        finally:
            signals.request_finished.send(sender=type(self))

    @staticmethod
    def read_body(environ, length: int) -> bytes:
        """Read `length` bytes of body, and put them back for Django should the request go there after all."""
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        return body
