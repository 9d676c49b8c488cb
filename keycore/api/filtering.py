"""The API's django-filter backend: the portal's FilterSets, with values made safe for every database.

A datetime with an offset Python accepts but PostgreSQL does not (``-18:53``) would
reach the database as given and fail there; here every datetime is converted to
UTC first, and one that cannot be (year 1 with a positive offset) is a 400.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django_filters import rest_framework as filters
from django_filters.utils import translate_validation

from keycore import errors


class ApiFilterBackend(filters.DjangoFilterBackend):
    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid() and self.raise_exception:
            raise translate_validation(filterset.errors)
        cleaned = filterset.form.cleaned_data
        for name, value in cleaned.items():
            if isinstance(value, datetime) and value.tzinfo is not None:
                try:
                    cleaned[name] = value.astimezone(UTC)
                except OverflowError:
                    raise errors.InvalidInput(
                        f"{name} is out of range.", field_errors={name: ["Out of range."]}
                    ) from None
        return filterset.qs
