"""A tenant's summary columns and the dashboard's counts of them, kept in step with every change.

``Tenant`` carries denormalised columns — ``key_ownership``, ``primary_provider``, ``health``
and ``key_status`` — so that the tenants list filters a million rows on indexed columns, and
``TenantCount`` holds how many tenants have each value of ``status``, ``key_ownership`` and
``key_status``, and were created in each week, so that the vendor dashboard never counts
tenants. Both are written here and nowhere else, by :func:`tenant_summary_sync`, which every
service that can move them calls inside its own transaction: key state changes (revoke,
disable, re-enable, decrypt-only, retire, destroy, make primary, add), health checks, tenant
status changes, and the end of a rekey job. Bulk onboarding adds its tenants with :func:`tenant_counts_add`.

The counts move by deltas (``count = count ± 1`` on the row of the old and of the new value,
in one sorted order so that two transactions never wait for each other in a circle);
:func:`tenant_counts_recompute` (``manage.py tenant_counts``) recounts and repairs them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Sum
from django.db.models.functions import Mod

from keycore.key_status import ConfigFacts, key_status_of
from keycore.models import KmsConfig, Tenant, TenantCount, TenantKeyWrap
from keycore.models.keys import ConfigOwner, ConfigState, TenantKeyState
from keycore.models.tenants import Health, KeyOwnership, KeyStatus, TenantStatus

#: the columns of Tenant that TenantCount counts, and the week each tenant was created in (never changes)
COUNTED = ("status", "key_ownership", "key_status", "created_week")
#: every value each counted column can take (the rows the migration creates)
COUNTED_VALUES = {
    "status": TenantStatus.values,
    "key_ownership": KeyOwnership.values,
    "key_status": KeyStatus.values,
}
_GONE = (ConfigState.RETIRED, ConfigState.DESTROYED)


def tenant_summary_sync(*, tenant: Tenant, status_before: str | None = None, created: bool = False) -> Tenant:
    """Recompute ``tenant``'s summary columns from its configurations and move the dashboard's counts.

    Call it in the transaction of the change, after the change. ``status_before``: the
    status the tenant had before this transaction changed it (the row already holds the
    new one); ``created``: the tenant is new and not counted yet. Updates ``tenant`` in place.
    """
    with transaction.atomic():
        row = (
            Tenant.objects.select_for_update(no_key=True)
            .only("id", "status", "key_ownership", "primary_provider", "health", "key_status", "created_at")
            .get(pk=tenant.pk)
        )
        configs = list(
            KmsConfig.objects.filter(tenant_id=row.pk)
            .exclude(state__in=_GONE)
            .values("id", "owner", "provider", "state", "health", "is_primary")
        )
        others = [c["id"] for c in configs if not c["is_primary"]]
        holding = set()
        if others:
            holding = set(
                TenantKeyWrap.objects.filter(kms_config_id__in=others)
                .exclude(tenant_key__state=TenantKeyState.DESTROYED)
                .values_list("kms_config_id", flat=True)
                .distinct()
            )
        primary = next((c for c in configs if c["is_primary"]), None)
        key_status = key_status_of(
            tenant_status=row.status,
            configs=[
                ConfigFacts(
                    owner=c["owner"],
                    state=c["state"],
                    health=c["health"],
                    is_primary=c["is_primary"],
                    holds_keys=c["is_primary"] or c["id"] in holding,
                )
                for c in configs
            ],
        )
        fields = {"key_status": key_status.value}
        if primary is not None:
            fields["key_ownership"] = (
                KeyOwnership.TENANT if primary["owner"] == ConfigOwner.TENANT else KeyOwnership.VENDOR
            ).value
            fields["primary_provider"] = primary["provider"]
            failing = any(c["health"] == Health.FAILING for c in configs)
            fields["health"] = Health.FAILING.value if failing else primary["health"]
        changed = {name: value for name, value in fields.items() if getattr(row, name) != value}
        if changed:
            Tenant.objects.filter(pk=row.pk).update(**changed)
        before = None if created else _counted(row, status=status_before or row.status)
        for name, value in changed.items():
            setattr(row, name, value)
        _move_counts(row.pk, before, _counted(row, status=row.status))
    for name in ("status", *fields):
        setattr(tenant, name, getattr(row, name))
    return tenant


def week_of(moment: datetime) -> str:
    """The Monday (UTC) of the week of ``moment``, as the dashboard's weekly chart names it."""
    day = moment.astimezone(UTC).date()
    return (day - timedelta(days=day.weekday())).isoformat()


def _counted(row: Tenant, *, status: str) -> dict[str, str]:
    return {
        "status": status,
        "key_ownership": row.key_ownership,
        "key_status": row.key_status,
        "created_week": week_of(row.created_at),
    }


def _move_counts(tenant_id: int, before: Mapping[str, str] | None, after: Mapping[str, str]) -> None:
    slot = tenant_id % TenantCount.SLOTS
    deltas: Counter = Counter()
    for dimension in COUNTED:
        old, new = (before or {}).get(dimension), after[dimension]
        if old == new:
            continue
        if old is not None:
            deltas[(dimension, old, slot)] -= 1
        deltas[(dimension, new, slot)] += 1
    _apply(deltas)


def _apply(deltas: Mapping[tuple[str, str, int], int]) -> None:
    """Add each delta to its row, in one global order (no two transactions can wait for each other in a circle)."""
    for (dimension, value, slot), delta in sorted(deltas.items()):
        if not delta:
            continue
        rows = TenantCount.objects.filter(dimension=dimension, value=value, slot=slot)
        if rows.update(count=F("count") + delta):
            continue
        try:  # a value no migration created a row for (a choice added later): the first change creates it
            with transaction.atomic():
                TenantCount.objects.create(dimension=dimension, value=value, slot=slot, count=delta)
        except IntegrityError:
            rows.update(count=F("count") + delta)


def tenant_counts_add(rows: Iterable[Mapping[str, object]]) -> None:
    """Count tenants created in bulk (``seed_tenants``): each row has ``id``, ``created_at`` and the counted columns."""
    deltas: Counter = Counter()
    for row in rows:
        slot = int(row["id"]) % TenantCount.SLOTS
        values = {**row, "created_week": week_of(row["created_at"])}
        for dimension in COUNTED:
            deltas[(dimension, str(values[dimension]), slot)] += 1
    with transaction.atomic():
        _add_many(deltas)


def _add_many(deltas: Mapping[tuple[str, str, int], int]) -> None:
    """Add many deltas in a few statements (an upsert per 500 rows, in the same sorted order as :func:`_apply`).

    A batch of 2,000 tenants created over two years touches some 1,700 (week, slot) rows: one UPDATE
    each would cost more than creating the tenants.
    """
    rows = [(d, v, slot, n) for (d, v, slot), n in sorted(deltas.items()) if n]
    table = connection.ops.quote_name(TenantCount._meta.db_table)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 500):
            chunk = rows[start : start + 500]
            marks = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} (dimension, value, slot, count) VALUES {marks} "  # noqa: S608 - the model's table
                f"ON CONFLICT (dimension, value, slot) DO UPDATE SET count = {table}.count + excluded.count",
                [item for row in chunk for item in row],
            )


def tenant_counts() -> dict[str, dict[str, int]]:
    """How many tenants have each value of each counted column: one read of a table of a few hundred rows."""
    result: dict[str, dict[str, int]] = {dimension: {} for dimension in COUNTED}
    for dimension, value, n in (
        TenantCount.objects.values_list("dimension", "value").annotate(n=Sum("count")).order_by()
    ):
        if n:
            result.setdefault(dimension, {})[value] = n
    return result


def _recount() -> Counter:
    actual: Counter = Counter()
    slots = Tenant.objects.annotate(slot=Mod("id", TenantCount.SLOTS))
    for dimension in COUNTED:
        if dimension == "created_week":
            continue
        for value, slot, n in slots.values_list(dimension, "slot").annotate(n=Count("id")).order_by():
            actual[(dimension, value, int(slot))] = n
    # weeks: grouped here, the same way on every database (a scan; this is the maintenance command)
    for pk, created_at in Tenant.objects.values_list("id", "created_at").order_by().iterator(chunk_size=10000):
        actual[("created_week", week_of(created_at), pk % TenantCount.SLOTS)] += 1
    return actual


def tenant_counts_recompute(*, repair: bool = False) -> list[tuple[str, str, int, int]]:
    """Recount tenants and compare with ``TenantCount``; returns (dimension, value, counted, actual) that differ.

    With ``repair``, the counts are set to the recount. The count rows are locked first, so a
    change committing meanwhile is either in the recount or applies its delta after it.
    """
    with transaction.atomic():
        stored_rows = list(TenantCount.objects.select_for_update() if repair else TenantCount.objects.all())
        stored = Counter({(r.dimension, r.value, r.slot): r.count for r in stored_rows})
        actual = _recount()
        differ: list[tuple[str, str, int, int]] = []
        totals_stored: Counter = Counter()
        totals_actual: Counter = Counter()
        for (dimension, value, _slot), n in stored.items():
            totals_stored[(dimension, value)] += n
        for (dimension, value, _slot), n in actual.items():
            totals_actual[(dimension, value)] += n
        for key in sorted(set(totals_stored) | set(totals_actual)):
            if totals_stored[key] != totals_actual[key]:
                differ.append((*key, totals_stored[key], totals_actual[key]))
        if repair:
            keys = set(stored) | set(actual)
            wrong = {k: actual[k] for k in keys if stored[k] != actual[k]}
            for (dimension, value, slot), n in sorted(wrong.items()):
                if not TenantCount.objects.filter(dimension=dimension, value=value, slot=slot).update(count=n):
                    TenantCount.objects.create(dimension=dimension, value=value, slot=slot, count=n)
    return differ
