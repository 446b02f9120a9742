"""A WSGI fast path for `POST /smpc/exchange`, the request two workers make once per protocol round.

An encrypted inference of the reference MLP takes 17 rounds, one after another, so every millisecond
a round costs is paid 17 times on the client's latency. This path runs exactly what the DRF view runs
(`nodeauth.check_request` on the headers, `runtime.exchange_authorize`, `channels.deliver`, which reads
the body only once the session's evaluation accepted the signed label) without Django's request
machinery, and answers errors in the same JSON shape through the same exceptions. What every fast path
does (which requests it may take, the answer's headers, metrics) is gridnode.fastpath's; requests it
should not judge (a query string, a host Django would refuse, no Content-Length, a token) go to Django
unchanged.
"""

import re

from django.conf import settings

from gridnode.auth import NODES
from gridnode.errors import BadRequest
from gridnode.fastpath import Answer, FastPath
from smpc_app import channels, nodeauth, runtime

_MESSAGE = "HTTP_" + nodeauth.MESSAGE_HEADER.upper().replace("-", "_")
_SIGNATURE = "HTTP_" + nodeauth.SIGNATURE_HEADER.upper().replace("-", "_")


def _read_signed_body(environ, label: nodeauth.MessageLabel) -> bytes:
    body = environ["wsgi.input"].read(label.length)
    if len(body) != label.length:
        raise BadRequest("The request body ended before its Content-Length.")
    nodeauth.check_body(label, body)
    return body


class SessionExchangeFastPath(FastPath):
    """Answers the workers' round exchanges itself, errors included; every other request goes to Django."""

    paths = re.compile(re.escape(channels.EXCHANGE_PATH) + "/?")
    # Peers prove themselves with their node signature, checked here as in the view: no token is asked of them.
    group = NODES
    # Only a session's first round asks the database (runtime.exchange_authorize); the later ones, most
    # of them, spare the signals.
    signals_around_every_answer = False

    def answer(self, environ, match: re.Match, length: int) -> Answer:
        """The evaluation's reply, signed; an error raised on the way is answered in the one error shape."""
        header, signature = environ.get(_MESSAGE, ""), environ.get(_SIGNATURE, "")
        label = nodeauth.check_request(
            purpose=nodeauth.EXCHANGE,
            header=header,
            signature=signature,
            content_length=length,
            limit=settings.GRIDNODE_MAX_BODY_BYTES,
        )
        if label.round == 0:
            with self.django_request(environ):
                runtime.exchange_authorize(label)
        content, reply_headers = channels.deliver(
            label=label,
            header=header,
            signature=signature,
            read_body=lambda: _read_signed_body(environ, label),
        )
        reply_headers = reply_headers or nodeauth.sign_reply(request_signature=signature, status=200, body=content)
        return 200, "application/octet-stream", list(reply_headers.items()), content

    def endpoint(self, path: str) -> str:
        return "smpc-exchange"
