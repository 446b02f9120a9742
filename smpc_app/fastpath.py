"""A WSGI fast path for `POST /smpc/exchange`, the request two workers make once per protocol round.

An encrypted inference of the reference MLP takes 19 rounds, one after another, so every millisecond
a round costs is paid 19 times on the client's latency. This path runs exactly what the DRF view runs
(`nodeauth.check_request` on the headers, `runtime.exchange_authorize`, `channels.deliver`, which reads
the body only once the session's evaluation accepted the signed label) without Django's request
machinery, and answers errors in the same JSON shape through the same exceptions. Requests it should
not judge (a query string, a host Django would refuse) go to Django unchanged.
"""

import http
import logging
from time import perf_counter

from django.conf import settings
from django.core.signals import request_finished, request_started

from gridnode.errors import BadRequest, GridError
from gridnode.http import SECURITY_HEADERS, host_allowed
from gridnode.observability import observe_request
from smpc_app import channels, nodeauth, runtime

logger = logging.getLogger(__name__)

EXCHANGE_PATHS = {channels.EXCHANGE_PATH, channels.EXCHANGE_PATH + "/"}
_MESSAGE = "HTTP_" + nodeauth.MESSAGE_HEADER.upper().replace("-", "_")
_SIGNATURE = "HTTP_" + nodeauth.SIGNATURE_HEADER.upper().replace("-", "_")


def _content_length(environ) -> int | None:
    value = environ.get("CONTENT_LENGTH") or ""
    return int(value) if value.isascii() and value.isdigit() and len(value) < 16 else None


def _read_signed_body(environ, label: nodeauth.MessageLabel) -> bytes:
    body = environ["wsgi.input"].read(label.length)
    if len(body) != label.length:
        raise BadRequest("The request body ended before its Content-Length.")
    nodeauth.check_body(label, body)
    return body


class SessionExchangeFastPath:
    """WSGI middleware: answers the workers' round exchanges itself, hands every other request on."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        # Peers send no query string; a request with one gets Django's answer (?format= rules and all).
        if (
            environ.get("PATH_INFO") not in EXCHANGE_PATHS
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("QUERY_STRING")
            or not host_allowed(environ)
        ):
            return self.app(environ, start_response)
        started = perf_counter()
        headers = []
        try:
            signature = environ.get(_SIGNATURE, "")
            label = nodeauth.check_request(
                purpose=nodeauth.EXCHANGE,
                header=environ.get(_MESSAGE, ""),
                signature=signature,
                content_length=_content_length(environ),
                limit=settings.GRIDNODE_MAX_BODY_BYTES,
            )
            if label.round == 0:
                # The first round asks the database: with Django's request signals around it, as Django's
                # handler sends them (they close connections that are broken or past their age).
                request_started.send(sender=self.__class__, environ=environ)
                try:
                    runtime.exchange_authorize(label)
                finally:
                    request_finished.send(sender=self.__class__)
            content, reply_headers = channels.deliver(
                label=label,
                header=environ.get(_MESSAGE, ""),
                signature=signature,
                read_body=lambda: _read_signed_body(environ, label),
            )
            status, content_type = 200, "application/octet-stream"
            reply_headers = reply_headers or nodeauth.sign_reply(request_signature=signature, status=200, body=content)
            headers = list(reply_headers.items())
        except GridError as error:
            answer = error.response()
            status, content, content_type = answer.status_code, answer.content, answer["Content-Type"]
        start_response(
            f"{status} {http.HTTPStatus(status).phrase}",
            [("Content-Type", content_type), ("Content-Length", str(len(content))), *headers, *SECURITY_HEADERS],
        )
        try:
            observe_request(
                method="POST",
                path=environ["PATH_INFO"],
                endpoint="smpc-exchange",
                status=status,
                seconds=perf_counter() - started,
            )
        except Exception:  # telemetry never fails a request that was answered
            logger.exception("recording request metrics failed")
        return [content]
