"""Create many fully usable tenants fast: ``python manage.py seed_tenants 100000``.

For benchmarks and load tests of the portals and the API at the scale the product
promises. Each tenant ends up as ``tenant_create`` would leave it — a primary
vendor-provided (local) configuration with its own random KEK sealed under the root
key, tenant key v1 wrapped under it, and the two key-history entries — but rows are
written with ``bulk_create`` in batches, one transaction per batch. Per-tenant audit
events are skipped; one summary event records the whole run.

External ids are ``<prefix>-<number>``, numbered on from the highest one already
there, so running the command again adds tenants instead of colliding.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from datetime import timedelta
from types import SimpleNamespace

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from keycore.crypto.envelope import key_check_value, new_tenant_key
from keycore.models import KeyHistoryEntry, KmsConfig, Tenant, TenantKey, TenantKeyWrap
from keycore.models.keys import ConfigOwner, ConfigState, HistoryAction
from keycore.models.tenants import Health, KeyOwnership, KeyStatus, TenantStatus
from keycore.providers.base import WrapContext
from keycore.providers.registry import get_provider_class
from keycore.sealing import seal_secrets
from keycore.services.audit import Actor, audit_record
from keycore.services.summary import tenant_counts_add
from keycore.services.tenants import validate_external_id

VENDOR_PROVIDER = "local"
CONFIG_NAME = "Vendor-provided key"


# Made-up company names: enough combinations that searches behave as on real data.
def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_FIRST = _words(
    """
    Acme Alpine Amber Apex Arbor Atlas Aurora Beacon Birch Blue Bright Cedar Clear Cobalt Coral Crest
    Crystal Delta Eagle Echo Emerald Evergreen Falcon Fern Forge Frontier Golden Granite Harbor Hawk Horizon
    Indigo Iron Juniper Keystone Lake Laurel Liberty Lighthouse Maple Meadow Meridian Midway Nimbus Noble
    North Northwind Oak Ocean Orbit Pacific Peak Pine Pioneer Polar Prairie Quartz Radiant Raven Red Ridge
    River Rock Sage Sapphire Sierra Silver Solar Spring Spruce Star Sterling Stone Summit Sun Swift Terra
    Tidal Timber True Union Valley Vanguard Vertex Vista Willow Wind Zenith
"""
)
_SECOND = _words(
    """
    Analytics Bank Biotech Capital Cloud Commerce Consulting Data Devices Dynamics Energy Engineering
    Finance Foods Freight Games Health Holdings Insurance Labs Learning Logistics Media Medical Mobility
    Networks Partners Payments Pharma Robotics Security Software Solutions Studios Systems Telecom
    Therapeutics Travel Ventures Works
"""
)
_SUFFIX = ("", "", "", " Inc", " Ltd", " GmbH", " LLC", " SA", " AG", " BV", " Group", " Co")


def company_name(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_SECOND)}{rng.choice(_SUFFIX)}"


def next_number(prefix: str) -> int:
    """The first free number after the highest ``<prefix>-<number>`` already used."""
    ids = Tenant.objects.filter(external_id__startswith=f"{prefix}-").values_list("external_id", flat=True)
    highest = 0
    for external_id in ids.iterator(chunk_size=5000):
        tail = external_id[len(prefix) + 1 :]
        if tail.isdigit():
            highest = max(highest, int(tail))
    return highest + 1


class BulkInsert:
    """Plain multi-row INSERTs for one model, bypassing the ORM's per-value machinery.

    ``bulk_create`` spends about a millisecond per tenant preparing values; this
    spends microseconds. Every concrete column is written: values a row does not
    give come from the field's default (or "now" for ``auto_now`` fields), adapted
    once, so fields added to a model later keep working.
    """

    def __init__(self, model, now):
        self.model = model
        self.fields = [f for f in model._meta.concrete_fields if not f.primary_key]
        self.defaults = {}
        for f in self.fields:
            if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
                value = now
            elif f.has_default():
                value = f.get_default()
            else:
                value = None
            self.defaults[f.attname] = f.get_db_prep_save(value, connection)
        self.adapters = [self._adapter(f) for f in self.fields]

    @staticmethod
    def _adapter(field):
        """How to turn one column's Python values into database values, as Django would."""
        if field.get_internal_type() == "JSONField":
            return lambda value: field.get_db_prep_save(value, connection)
        if field.get_internal_type() == "UUIDField":
            native = connection.features.has_native_uuid_field
            return (lambda value: value) if native else (lambda value: value.hex)
        if field.get_internal_type() == "DateTimeField":
            # the same instant recurs on several rows of a tenant: adapt it once
            return functools.lru_cache(maxsize=4096)(connection.ops.adapt_datetimefield_value)
        return lambda value: value

    def run(self, rows: list[dict]) -> None:
        if not rows:
            return
        quote = connection.ops.quote_name
        columns = ", ".join(quote(f.column) for f in self.fields)
        row_marks = "(" + ", ".join(["%s"] * len(self.fields)) + ")"
        head = f"INSERT INTO {quote(self.model._meta.db_table)} ({columns}) VALUES "  # noqa: S608 - names from the model
        plan = list(zip([f.attname for f in self.fields], self.adapters, strict=True))
        defaults = self.defaults
        # as many rows per statement as the backends' bound-parameter limits allow (SQLite: 32766)
        per_statement = max(1, min(1000, 30000 // len(self.fields)))
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # COPY is PostgreSQL's bulk-load path: several times faster than any INSERT
                names = ", ".join(quote(f.column) for f in self.fields)
                copy_sql = f"COPY {quote(self.model._meta.db_table)} ({names}) FROM STDIN"
                with cursor.cursor.copy(copy_sql) as copy:
                    for row in rows:
                        copy.write_row([adapt(row[name]) if name in row else defaults[name] for name, adapt in plan])
                return
            for start in range(0, len(rows), per_statement):
                chunk = rows[start : start + per_statement]
                params = [adapt(row[name]) if name in row else defaults[name] for row in chunk for name, adapt in plan]
                cursor.execute(head + ", ".join([row_marks] * len(chunk)), params)


def seed_batch(*, prefix: str, first: int, count: int, rng: random.Random, actor_label: str) -> list[str]:
    """Create ``count`` tenants numbered from ``first``, with keys, in the caller's transaction.

    Set-based: one INSERT statement per table and a SELECT to learn the new ids.
    Returns the new tenants' external ids.
    """
    provider_cls = get_provider_class(VENDOR_PROVIDER)
    now = timezone.now()
    tenants = []
    for i in range(count):
        tenants.append(
            {
                "uid": uuid.uuid4(),
                "external_id": f"{prefix}-{first + i:07d}",
                "name": company_name(rng),
                "status": TenantStatus.ACTIVE.value,
                "key_ownership": KeyOwnership.VENDOR.value,
                "primary_provider": VENDOR_PROVIDER,
                "health": Health.OK.value,
                "key_status": KeyStatus.HEALTHY.value,  # as key_status_of says of a checked, active vendor key
                # spread over two years so that sorting by creation date means something
                "created_at": now - timedelta(seconds=rng.randrange(2 * 365 * 86400)),
                "status_changed_at": now,
            }
        )
    BulkInsert(Tenant, now).run(tenants)
    ids = dict(
        Tenant.objects.filter(external_id__in=[t["external_id"] for t in tenants]).values_list("external_id", "id")
    )
    configs, keys, material = [], [], []
    for tenant in tenants:
        tenant["id"] = ids[tenant["external_id"]]
        secrets = provider_cls.generate_secrets()
        provider = provider_cls({}, secrets)
        config = SimpleNamespace(uid=uuid.uuid4())  # what seal_secrets needs of the row: its uid
        seal_secrets(config, secrets)
        description = provider.describe()
        raw = new_tenant_key()
        configs.append(
            {
                "uid": config.uid,
                "tenant_id": tenant["id"],
                "owner": ConfigOwner.VENDOR.value,
                "provider": VENDOR_PROVIDER,
                "name": CONFIG_NAME,
                "sealed_secrets": config.sealed_secrets,
                "secret_fields_set": config.secret_fields_set,
                "state": ConfigState.ACTIVE.value,
                "is_primary": True,
                "health": Health.OK.value,
                "health_detail": f"Wrap and unwrap succeeded ({description}).",
                "health_checked_at": now,
                "last_success_at": now,
                "created_at": tenant["created_at"],
            }
        )
        keys.append(
            {
                "tenant_id": tenant["id"],
                "version": 1,
                "state": "active",
                "check_value": key_check_value(raw),
                "created_at": tenant["created_at"],
            }
        )
        material.append((provider, raw, description))
    BulkInsert(KmsConfig, now).run(configs)
    BulkInsert(TenantKey, now).run(keys)
    tenant_ids = [t["id"] for t in tenants]
    config_ids = dict(
        KmsConfig.objects.filter(tenant_id__in=tenant_ids, is_primary=True).values_list("tenant_id", "id")
    )
    key_ids = dict(TenantKey.objects.filter(tenant_id__in=tenant_ids, version=1).values_list("tenant_id", "id"))
    wraps, history = [], []
    for tenant, config, (provider, raw, description) in zip(tenants, configs, material, strict=True):
        context = WrapContext(tenant["uid"].hex, tenant["external_id"], config["uid"].hex, 1)
        wraps.append(
            {
                "tenant_key_id": key_ids[tenant["id"]],
                "kms_config_id": config_ids[tenant["id"]],
                "wrapped": provider.wrap(raw, context),
                "created_at": now,
                "verified_at": now,
            }
        )
        common = {
            "tenant_id": tenant["id"],
            "kms_config_id": config_ids[tenant["id"]],
            "config_name": CONFIG_NAME,
            "config_owner": ConfigOwner.VENDOR.value,
            "config_provider": VENDOR_PROVIDER,
            "actor_label": actor_label,
            "at": tenant["created_at"],
        }
        history.append({**common, "action": HistoryAction.CREATED.value, "detail": description})
        history.append(
            {**common, "action": HistoryAction.MADE_PRIMARY.value, "detail": "first configuration of the tenant"}
        )
    BulkInsert(TenantKeyWrap, now).run(wraps)
    BulkInsert(KeyHistoryEntry, now).run(history)
    tenant_counts_add(tenants)  # the dashboard's counts, in this batch's transaction
    return [t["external_id"] for t in tenants]


SEEDED_MODELS = (Tenant, KmsConfig, TenantKey, TenantKeyWrap, KeyHistoryEntry)


def refresh_statistics() -> None:
    """After a bulk load: fresh planner statistics, and on PostgreSQL an emptied GIN pending list.

    Rows COPYed into a table with a GIN index (the tenant search's trigram indexes) wait
    in the index's pending list, which every search reads sequentially until a VACUUM
    merges it; a freshly seeded 100k would make each search scan 100k pending entries.
    VACUUM cannot run in a transaction, so inside one (tests) only ANALYZE runs.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            for model in SEEDED_MODELS:
                cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
        else:
            cursor.execute("ANALYZE")


class Command(BaseCommand):
    help = "Create N tenants with working vendor-provided keys, in bulk (for benchmarks and load tests)."

    def add_arguments(self, parser):
        parser.add_argument("count", type=int)
        parser.add_argument("--prefix", default="seed", help="External ids are <prefix>-<number> (default: seed).")
        parser.add_argument("--batch", type=int, default=2000, help="Tenants per transaction (default: 2000).")
        parser.add_argument("--random-seed", type=int, default=None, help="Repeatable names and dates.")

    def handle(self, *args, count: int, prefix: str, batch: int, random_seed: int | None, **options):
        if count < 1:
            raise CommandError("Give a positive number of tenants.")
        if batch < 1:
            raise CommandError("--batch must be positive.")
        try:
            validate_external_id(f"{prefix}-0000001")
        except Exception as exc:
            raise CommandError(f"--prefix {prefix!r} does not make valid external ids.") from exc
        rng = random.Random(random_seed)  # names and dates only; keys come from os.urandom
        actor = Actor.system("seed_tenants")
        started = time.perf_counter()
        first = next_number(prefix)
        done = 0
        while done < count:
            size = min(batch, count - done)
            with transaction.atomic():
                seed_batch(prefix=prefix, first=first + done, count=size, rng=rng, actor_label=actor.label)
            done += size
            if options.get("verbosity", 1) > 1:
                self.stdout.write(f"{done}/{count} tenants ({time.perf_counter() - started:.1f} s)")
        with transaction.atomic():
            audit_record(
                actor=actor,
                action="tenant.bulk_seeded",
                target_type="tenant",
                target_repr=f"{prefix}-{first:07d} … {prefix}-{first + count - 1:07d}",
                changes={"count": [None, count], "first": [None, f"{prefix}-{first:07d}"]},
            )
        refresh_statistics()
        elapsed = time.perf_counter() - started
        self.stdout.write(
            self.style.SUCCESS(f"Created {count} tenants ({prefix}-{first:07d} onwards) in {elapsed:.1f} s.")
        )
