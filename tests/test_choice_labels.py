"""Tenant badges read their labels from a dict built once: the same labels as Django's own display."""

from __future__ import annotations

import pytest
from django.db import models

from keycore.models import Tenant
from keycore.models.tenants import Health, KeyOwnership, TenantStatus
from keycore.services.audit import Actor
from keycore.services.tenants import tenant_create

pytestmark = pytest.mark.django_db


def test_every_choice_shows_the_label_django_would_show():
    tenant = tenant_create(external_id="labels", name="Labels", actor=Actor.system("tests"))
    for name, choices in (("status", TenantStatus), ("key_ownership", KeyOwnership), ("health", Health)):
        field = Tenant._meta.get_field(name)
        for value, label in choices.choices:
            setattr(tenant, name, value)
            shown = getattr(tenant, f"get_{name}_display")()
            assert shown == label == models.Model._get_FIELD_display(tenant, field)
            assert type(shown) is str


def test_a_value_without_a_choice_shows_as_itself_as_in_django():
    tenant = Tenant(external_id="odd", name="Odd", status="not-a-status")
    assert tenant.get_status_display() == "not-a-status"
    assert models.Model._get_FIELD_display(tenant, Tenant._meta.get_field("status")) == "not-a-status"
