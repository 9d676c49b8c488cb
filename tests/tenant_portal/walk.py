"""Every tenant-portal URL, filled with one tenant's objects: what the isolation walker and the
permission matrix iterate over, so a page added to tenant_portal/urls.py cannot escape either.

A URL keyword this module cannot fill fails those tests with a message saying where to teach it.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, reverse

import tenant_portal.urls


@dataclass(frozen=True)
class Route:
    name: str
    pattern: URLPattern
    kwargs: tuple[str, ...]  # the keywords taken from the path, "tenant" first

    @property
    def object_kwargs(self) -> tuple[str, ...]:
        """Keywords naming an object (a uid), not the tenant or a fixed word such as a provider name."""
        return tuple(k for k in self.kwargs if k not in ("tenant", "provider"))

    @property
    def access(self) -> tuple[str, str] | None:
        """("tenant", cap) as keycore.access.tenant_view records it on the view."""
        return getattr(self.pattern.callback, "keycore_access", None)

    def __str__(self) -> str:
        return self.name


def _patterns(patterns, prefix: str = ""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _patterns(entry.url_patterns, prefix)
        elif isinstance(entry, URLPattern):
            yield entry


def tenant_routes() -> list[Route]:
    """Every pattern of tenant_portal/urls.py under ``<tenant>/`` (all but the switcher)."""
    routes = []
    for pattern in _patterns(tenant_portal.urls.urlpatterns):
        converters = getattr(pattern.pattern, "converters", {}) or {}
        names = tuple(converters)
        if "tenant" not in names:
            continue
        assert pattern.name, f"tenant-portal URL {pattern.pattern} needs a name"
        ordered = ("tenant", *(n for n in names if n != "tenant"))
        routes.append(Route(pattern.name, pattern, ordered))
    return routes


def sample_objects(tenant) -> dict[str, str]:
    """One object of ``tenant`` for every keyword a tenant-portal URL takes (created here if needed)."""
    from keycore.models import KmsConfig, Membership, RekeyJob
    from keycore.models.jobs import JobKind
    from keycore.services.audit import Actor
    from keycore.services.keys import tenant_key_create
    from keycore.services.tenants import invitation_create

    actor = Actor.system("tests")
    config = KmsConfig.objects.for_tenant(tenant).get(is_primary=True)
    job = RekeyJob.objects.create(
        kind=JobKind.REWRAP, tenant=tenant, target_config=config, total=1, started_by_label="tests"
    )
    invitation, _ = invitation_create(
        tenant=tenant, email=f"invited@{tenant.external_id}.example", role="auditor", actor=actor, send=False
    )
    member = Membership.objects.for_tenant(tenant).order_by("id").first()
    assert member is not None, "give the tenant a member first"
    # versions are numbered per tenant: give this one a number the other tenant's (fresh) key has not reached
    for _ in range(3):
        tenant_key_create(tenant=tenant, actor=actor)
    objects = {
        "config": str(config.uid),
        "job": str(job.uid),
        "invitation": str(invitation.uid),
        "member": str(member.uid),
        "version": "4",
        "provider": "aws",
    }
    objects.update(_security_event_objects(tenant))
    return objects


def _security_event_objects(tenant) -> dict[str, str]:
    """Objects of the security-events pages (tenant_portal/events.py), which another module owns."""
    out = {}
    try:
        from keycore.models.events import ChainVerification, EventDestination
    except ImportError:  # pragma: no cover - the models exist since the events pipeline landed
        return out
    destination = EventDestination.objects.create(tenant=tenant, kind="webhook", name="SIEM", settings={})
    verification = ChainVerification.objects.create(
        tenant=tenant, chain=f"tenant:{tenant.pk}", requested_by_label="tests"
    )
    out["destination"] = str(destination.uid)
    out["verification"] = str(verification.uid)
    return out


def path_for(route: Route, external_id: str, objects: dict[str, str]) -> str:
    missing = [k for k in route.kwargs if k != "tenant" and k not in objects]
    assert not missing, (
        f"tests/tenant_portal/walk.py cannot fill {missing} of tenant:{route.name}; "
        "teach sample_objects() to make one, so the isolation walker covers the page"
    )
    kwargs = {"tenant": external_id, **{k: objects[k] for k in route.kwargs if k != "tenant"}}
    return reverse(f"tenant:{route.name}", kwargs=kwargs)
