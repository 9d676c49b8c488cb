from __future__ import annotations

from rest_framework import permissions


class HasScope(permissions.BasePermission):
    """The API key carries the view's ``required_scope`` (views may vary it per method)."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request, view) -> bool:
        key = request.auth
        if key is None:
            return False
        scope = getattr(view, "required_scopes", {}).get(request.method) or getattr(view, "required_scope", None)
        if scope is None:
            return False
        if scope not in key.scopes:
            self.message = f"This API key lacks the '{scope}' scope."
            return False
        return True
