from __future__ import annotations

from rest_framework import permissions


class HasScope(permissions.BasePermission):
    """The API key carries the view's ``required_scope`` (views may vary it per method with ``required_scopes``).

    A view that declares no scope for a method is closed to every key: forgetting a
    scope can only deny, never open.
    """

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if key is None:
            return False
        method = request.method.lower()
        if method == "options" or method not in view.http_method_names or not hasattr(view, method):
            return True  # the view answers 405 Method Not Allowed (OPTIONS too: no metadata class)
        method = "GET" if request.method == "HEAD" else request.method
        scope = getattr(view, "required_scopes", {}).get(method) or getattr(view, "required_scope", None)
        if scope is None:
            return False
        if scope not in key.scopes:
            self.message = f"This API key lacks the '{scope}' scope."
            return False
        return True
