"""Bulk onboarding: tenants and their first admins from a CSV file, previewed before anything is created.

Every row is checked with the same validators ``tenant_create`` runs. A tenant is
created only when all of its rows are valid (no tenant without the admins the
file meant it to have); each tenant is created in its own transaction by
``tenant_create``, so one failure never leaves half a tenant. Rows whose external
id already exists are reported and skipped, so uploading the same file twice
creates nothing twice.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from django.core import signing

from keycore import errors
from keycore.models import Tenant
from keycore.models.tenants import InvitationAudience
from keycore.roles import TenantRole
from keycore.services.audit import Actor
from keycore.services.tenants import (
    AdminInvite,
    _validate_invite,
    tenant_create,
    validate_external_id,
    validate_name,
)

# tenant_create checks each admin with this (it has no public name yet); the preview says what it would say
validate_invite = _validate_invite

COLUMNS = ("external_id", "name", "admin_email", "admin_role")
REQUIRED_COLUMNS = ("external_id", "name")
MAX_ROWS = 1000
MAX_BYTES = 1_000_000
PAYLOAD_SALT = "keycore.vendor_portal.onboarding"
PAYLOAD_MAX_AGE = 3600  # seconds between the preview and the confirmation


class Status:
    NEW = "new"
    EXISTS = "exists"
    INVALID = "invalid"
    BLOCKED = "blocked"  # valid itself, but another row of the same tenant is not


@dataclass
class Row:
    line: int
    external_id: str
    name: str
    admin_email: str
    admin_role: str
    status: str = Status.NEW
    problems: list[str] = field(default_factory=list)


@dataclass
class Plan:
    rows: list[Row]
    #: external id → (name, admins) of each tenant that would be created
    tenants: dict[str, tuple[str, list[AdminInvite]]]
    problem: str = ""

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status (new, exists, invalid, blocked)."""
        out = dict.fromkeys((Status.NEW, Status.EXISTS, Status.INVALID, Status.BLOCKED), 0)
        for row in self.rows:
            out[row.status] += 1
        return out


@dataclass
class Outcome:
    external_id: str
    name: str
    created: bool
    detail: str


class FileProblem(Exception):
    """The file as a whole cannot be read (encoding, header, size)."""


def read_upload(upload) -> str:
    if upload.size > MAX_BYTES:
        raise FileProblem(f"The file is larger than {MAX_BYTES // 1_000_000} MB; split it, or use the REST API.")
    raw = upload.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FileProblem("The file is not UTF-8 text; save it as CSV UTF-8.") from None


def plan_import(text: str) -> Plan:
    """Check every row; decide which tenants would be created. Reads the database, writes nothing."""
    reader = csv.DictReader(io.StringIO(text))
    header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise FileProblem(f"The first line must name the columns {', '.join(COLUMNS)}; missing: {', '.join(missing)}.")
    reader.fieldnames = header
    rows: list[Row] = []
    for record in reader:
        if len(rows) >= MAX_ROWS:
            raise FileProblem(f"At most {MAX_ROWS} rows per file; split it, or use the REST API.")
        values = {c: (record.get(c) or "").strip() for c in COLUMNS}
        if not any(values.values()):
            continue  # blank line
        rows.append(Row(reader.line_num, **values))
    if not rows:
        raise FileProblem("The file has no rows below its header.")

    by_tenant: dict[str, list[Row]] = {}
    for row in rows:
        try:
            row.external_id = validate_external_id(row.external_id)
        except errors.InvalidInput as exc:
            row.problems.append(f"external_id: {exc.detail}")
        try:
            row.name = validate_name(row.name)
        except errors.InvalidInput as exc:
            row.problems.append(f"name: {exc.detail}")
        if row.admin_email or row.admin_role:
            row.admin_role = (row.admin_role or TenantRole.OWNER).lower()
            try:
                row.admin_email = validate_invite(row.admin_email, row.admin_role, audience=InvitationAudience.TENANT)
            except errors.InvalidInput as exc:
                row.problems.append(f"admin: {exc.detail}")
        if row.external_id and not any(p.startswith("external_id") for p in row.problems):
            by_tenant.setdefault(row.external_id, []).append(row)
        if row.problems:
            row.status = Status.INVALID

    existing = set(Tenant.objects.filter(external_id__in=list(by_tenant)).values_list("external_id", flat=True))
    tenants: dict[str, tuple[str, list[AdminInvite]]] = {}
    for external_id, group in by_tenant.items():
        first = group[0]
        seen: set[str] = set()
        for row in group[1:]:
            if row.name != first.name:
                row.problems.append(f"name: line {first.line} names this tenant {first.name!r}.")
                row.status = Status.INVALID
        for row in group:
            if row.admin_email and row.status != Status.INVALID:
                if row.admin_email in seen:
                    row.problems.append(f"admin: {row.admin_email} is listed twice for this tenant.")
                    row.status = Status.INVALID
                seen.add(row.admin_email)
        if external_id in existing:
            for row in group:
                if row.status != Status.INVALID:
                    row.status = Status.EXISTS
            continue
        if any(row.status == Status.INVALID for row in group):
            for row in group:
                if row.status == Status.NEW:
                    row.status = Status.BLOCKED
            continue
        admins = [AdminInvite(r.admin_email, r.admin_role) for r in group if r.admin_email]
        tenants[external_id] = (first.name, admins)
    return Plan(rows=rows, tenants=tenants)


def apply_plan(plan: Plan, *, actor: Actor) -> list[Outcome]:
    """Create the planned tenants, each in its own transaction; report each one."""
    outcomes = []
    for external_id, (name, admins) in plan.tenants.items():
        try:
            tenant_create(external_id=external_id, name=name, admins=admins, actor=actor)
        except errors.KeyCoreError as exc:
            outcomes.append(Outcome(external_id, name, False, exc.detail))
            for row in plan.rows:
                if row.external_id == external_id:
                    row.status = Status.INVALID
                    row.problems.append(exc.detail)
        else:
            invited = f", {len(admins)} admin(s) invited" if admins else ""
            outcomes.append(Outcome(external_id, name, True, f"created{invited}"))
    return outcomes


def seal_payload(text: str) -> str:
    """The file's text, signed (and compressed) to travel from the preview to the confirmation unchanged."""
    return signing.dumps(text, salt=PAYLOAD_SALT, compress=True)


def open_payload(payload: str) -> str:
    try:
        return signing.loads(payload, salt=PAYLOAD_SALT, max_age=PAYLOAD_MAX_AGE)
    except signing.SignatureExpired:
        raise FileProblem("The preview is more than an hour old; upload the file again.") from None
    except signing.BadSignature:
        raise FileProblem("The upload could not be read back; upload the file again.") from None
