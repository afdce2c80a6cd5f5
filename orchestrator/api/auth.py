"""DRF authentication (bearer JWT) and scope permissions for the API."""
from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from ledger.models import ActorType
from ledger.services import Actor

from ..tokens import Principal, TokenInvalid, token_verify


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <jwt>``; no header means anonymous (then 401 from permissions)."""

    def authenticate(self, request: Request) -> tuple[Principal, str] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != b"bearer" or len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "expected 'Authorization: Bearer <token>'", code="invalid_token")
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("the token is not ASCII", code="invalid_token") from None
        try:
            principal = token_verify(token)
        except TokenInvalid as exc:
            raise exceptions.AuthenticationFailed(exc.message, code=exc.code) from None
        return principal, token

    def authenticate_header(self, request: Request) -> str:
        # Present so DRF answers 401 (not 403) to unauthenticated calls.
        return 'Bearer realm="stellaops-orchestrator"'


class HasScope(BasePermission):
    """Requires an authenticated principal holding the view's ``required_scope`` (a scope, or
    a dict from HTTP method to scope)."""

    message = "this call needs another scope"

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            return False
        scope = getattr(view, "required_scope", None)
        if isinstance(scope, dict):  # per-method scopes: {"GET": "orch:read", "POST": ...}
            scope = scope.get(request.method)
        if scope is None:
            # A method the view does not implement (PUT on a GET/PATCH view; OPTIONS, which
            # only APIView provides) is a 405, not a missing scope; a handler the view does
            # define without a scope is a bug.
            from rest_framework.views import APIView  # here: DRF imports this module

            method = request.method.lower()
            if getattr(type(view), method, None) in (None, getattr(APIView, method, None)):
                raise exceptions.MethodNotAllowed(request.method)
            raise RuntimeError(f"{type(view).__name__} declares no scope for {request.method}")
        if not principal.has_scope(scope):
            raise exceptions.PermissionDenied(
                f"this call needs the '{scope}' scope", code="insufficient_scope")
        return True


def operator_actor(request: Request) -> Actor:
    """The ledger ``Actor`` of an authenticated API call: an operator named by the token's
    ``sub`` (kept as a label, so it survives the user)."""
    return Actor(ActorType.OPERATOR, request.user.subject)
