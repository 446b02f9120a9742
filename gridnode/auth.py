"""Token auth that an operator turns on per group of endpoints (docs/security.md).

Every endpoint belongs to one group, declared on its view with `@requires(GROUP)`; a group is closed when
its `GRIDNODE_AUTH_<GROUP>` setting is true, and a closed group answers 401 to a request without a valid
`Authorization: Token <key>` (DRF's `rest_framework.authtoken` tokens, one per user). Everything is open
by default, as the seed says ("Auth required: NO (can be changed)").

A token that is sent is always checked, on open groups too: a client whose token is wrong or revoked
learns it at once, instead of uploading anonymously while it believes it is known.
"""

import re
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.http import JsonResponse
from rest_framework import authentication, exceptions, permissions

from gridnode.errors import GridError

READ = "read"
WRITE = "write"
INFERENCE = "inference"
DOWNLOAD = "download"
METRICS = "metrics"
# The groups an operator can close (GRIDNODE_AUTH_<GROUP>).
GROUPS = (READ, WRITE, INFERENCE, DOWNLOAD, METRICS)
# Calls between the nodes of an encrypted model (smpc_app): they prove themselves with a signature under
# the nodes' shared GRIDNODE_SMPC_SECRET, checked by the view, so no user token is ever asked of them.
NODES = "nodes"

KEYWORD = "Token"
# DRF makes 40 hex digits; a key that could not have been stored is refused without a query (a NUL byte
# would even make PostgreSQL fail it).
_PLAUSIBLE_KEY = re.compile(r"[!-~]{1,40}")


class Unauthorized(GridError):
    """401: the endpoint's group is closed and the request has no valid token, or the token is wrong."""

    status = 401

    def response(self, **contract_fields) -> JsonResponse:
        response = super().response(**contract_fields)
        response["WWW-Authenticate"] = KEYWORD
        return response


def group_closed(group: str) -> bool:
    """Whether the operator turned token auth on for this group (read per request, not at import)."""
    if group == NODES:
        return False
    return getattr(settings, f"GRIDNODE_AUTH_{group.upper()}")


def _check_group(group: str) -> None:
    if group not in (*GROUPS, NODES):
        raise ValueError(f"Unknown auth group {group!r}: one of {', '.join((*GROUPS, NODES))}.")


def requires(group: str, **error_fields) -> Callable:
    """Declare the group of a view's action, and the contract's extra keys on every error it answers
    (beside those its view class declares as `error_fields`; gridnode.errors adds them)."""
    _check_group(group)

    def declare(action):
        action.auth_group = group
        action.error_fields = error_fields
        return action

    return declare


def _handler(view, method: str):
    return getattr(view, getattr(view, "action", None) or method.lower(), None)


def declared_group(view, method: str) -> str:
    """The group of what a DRF view is about to run for this method.

    A handler that declares nothing (a view added without `@requires`, OPTIONS, a method answered 405)
    is a read when the method is safe and a write otherwise, so forgetting a declaration never opens a
    closed node.
    """
    group = getattr(_handler(view, method), "auth_group", None)
    if group is None:
        return READ if method in permissions.SAFE_METHODS else WRITE
    return group


def declared_error_fields(view, method: str) -> dict:
    """The keys the contract puts beside `error` in what a DRF view answers for this method: its class's
    `error_fields`, then its action's (`requires`)."""
    return {**getattr(view, "error_fields", {}), **getattr(_handler(view, method), "error_fields", {})}


def _missing_token() -> Unauthorized:
    return Unauthorized(f"This endpoint needs a token: send 'Authorization: {KEYWORD} <key>'.")


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, failing in the node's one error shape."""

    def authenticate(self, request):
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            raise Unauthorized("Invalid token.") from None

    def authenticate_credentials(self, key):
        if not _PLAUSIBLE_KEY.fullmatch(key):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(key)


class GroupPermission(permissions.BasePermission):
    """DRF's permission for every view: through when the action's group is open or the token is valid."""

    def has_permission(self, request, view) -> bool:
        if group_closed(declared_group(view, request.method)) and not (request.user and request.user.is_authenticated):
            raise _missing_token()
        return True


def protect(view_func: Callable, group: str) -> Callable:
    """Guard a plain Django view (outside DRF) with a group's switch; while the group is open it is untouched."""
    _check_group(group)

    @wraps(view_func)
    def guarded(request, *args, **kwargs):
        if group_closed(group):
            try:
                found = TokenAuthentication().authenticate(request)
            except Unauthorized as exc:
                return exc.response()
            if found is None:
                return _missing_token().response()
        return view_func(request, *args, **kwargs)

    return guarded


def answers_without_a_token(group: str, environ) -> bool:
    """Whether DRF would serve a request to an endpoint of `group` without looking at a token: the group is
    open and the request sends none (a token that is sent is always checked). The WSGI fast paths
    (gridnode/fastpath.py) answer only such requests."""
    return not group_closed(group) and "HTTP_AUTHORIZATION" not in environ


def authenticated_or_none(user):
    """The user when authenticated; None for no user or an anonymous one (what `uploaded_by` records)."""
    return user if user is not None and user.is_authenticated else None
