"""What the vendor bridge reads and returns. Thin: validation of domain rules stays in the services.

Secrets are write-only: ``KmsConfigCreateSerializer.secrets`` is accepted and
never returned; configurations show only ``secret_fields_set`` (the names of the
secrets that are set). No serializer has a field for sealed secrets, key wraps,
token or key hashes.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from keycore.key_rules import DECRYPT_ONLY, MAKE_PRIMARY, RETIRE, ConfigActions, kms_config_allowed_actions
from keycore.key_status import describe
from keycore.models import (
    AuditEvent,
    Invitation,
    KeyHistoryEntry,
    KeyUseEvent,
    KmsConfig,
    RekeyJob,
    Tenant,
    TenantKey,
    VendorKey,
)
from keycore.models.tenants import EXTERNAL_ID_PATTERN, Health, KeyStatus
from keycore.roles import TenantRole
from keycore.services.audit import Actor
from keycore.services.events import detail_operations

# --- tenants ------------------------------------------------------------------------------


class TenantSerializer(serializers.ModelSerializer):
    """``key_status`` says whether the tenant's data can be read now (keycore/key_status.py) — what support
    looks at first; ``health`` is only the last health check of its KMS (a revoked key's KMS may still answer),
    kept for clients written before key statuses."""

    health = serializers.ChoiceField(
        choices=Health.choices,
        read_only=True,
        help_text="The last health check of the tenant's KMS keys (failing if any key it uses failed). Not whether "
        "its data can be read: a revoked key's KMS can be reachable. Read key_status for that.",
    )
    key_status = serializers.ChoiceField(
        choices=KeyStatus.choices,
        read_only=True,
        help_text="Whether the tenant's data can be read now: healthy, degraded, kms_unreachable, revoked (by the "
        "tenant), disabled, suspended, offboarded, shredded. Filter the list with ?key_status= (also dark, at_risk).",
    )
    key_status_detail = serializers.SerializerMethodField(help_text="The key status in one sentence for people.")

    class Meta:
        model = Tenant
        fields = [
            "external_id",
            "name",
            "status",
            "key_ownership",
            "primary_provider",
            "health",
            "key_status",
            "key_status_detail",
            "require_mfa",
            "key_rotation_days",
            "event_retention_days",
            "key_cache_seconds",
            "retire_idle_days",
            "auto_retire_versions",
            "detailed_events",
            "created_at",
            "updated_at",
            "status_changed_at",
            "shred_after",
        ]
        read_only_fields = fields

    def get_key_status_detail(self, tenant: Tenant) -> str:
        return describe(tenant.key_status).sentence


class AdminInviteSerializer(serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=TenantRole.choices, default=TenantRole.OWNER)


class TenantCreateSerializer(serializers.Serializer):
    external_id = serializers.RegexField(
        EXTERNAL_ID_PATTERN,
        max_length=128,
        help_text="Your own id of the tenant: 1–128 letters, digits, dots, dashes or underscores. Immutable.",
    )
    name = serializers.CharField(max_length=200)
    admins = AdminInviteSerializer(
        many=True, required=False, help_text="People invited to administer the tenant (emails go out at once)."
    )
    vendor_key = serializers.CharField(
        max_length=120,
        required=False,
        help_text="The vendor key (uid or name) the tenant's key is wrapped under; default: the default vendor key.",
    )

    def validate_admins(self, value):
        if len(value) > 20:
            raise serializers.ValidationError("At most 20 admins per tenant.")
        return value


class TenantUpdateSerializer(serializers.Serializer):
    """The tenant's own settings (all but ``name``) are the vendor's to set only until the tenant has an owner;
    ``key_rotation_days`` only while the tenant has no key of its own. Otherwise: 403 tenant-sovereignty."""

    name = serializers.CharField(max_length=200, required=False)
    require_mfa = serializers.BooleanField(required=False)
    key_rotation_days = serializers.IntegerField(min_value=1, max_value=3650, required=False, allow_null=True)
    event_retention_days = serializers.IntegerField(min_value=1, max_value=3650, required=False)
    key_cache_seconds = serializers.IntegerField(min_value=30, max_value=300, required=False, allow_null=True)
    retire_idle_days = serializers.IntegerField(min_value=1, max_value=3650, required=False, allow_null=True)
    auto_retire_versions = serializers.BooleanField(required=False)
    detailed_events = serializers.BooleanField(required=False)


class StatusChangeSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")


class BulkTenantsSerializer(serializers.Serializer):
    """Only the envelope; each item is validated on its own so that one bad item fails alone."""

    tenants = serializers.ListField(
        child=serializers.DictField(), min_length=1, max_length=1000, help_text="Up to 1,000 tenants to create."
    )
    vendor_key = serializers.CharField(
        max_length=120, required=False, help_text="The vendor key (uid or name) of every tenant that names none."
    )


class BulkItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    external_id = serializers.CharField(allow_null=True)
    status = serializers.IntegerField(help_text="201 when created, else the status of the problem in `error`.")
    tenant = TenantSerializer(required=False)
    error = serializers.DictField(required=False, help_text="A problem object (type, title, status, detail, errors).")


class BulkResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    failed = serializers.IntegerField()
    results = BulkItemResultSerializer(many=True)


# --- invitations -------------------------------------------------------------------------------


class InvitationSerializer(serializers.ModelSerializer):
    role = serializers.ChoiceField(choices=TenantRole.choices, read_only=True)
    state = serializers.ChoiceField(
        choices=["pending", "awaiting approval", "accepted", "revoked", "expired"],
        read_only=True,
        help_text="`awaiting approval`: asked by the vendor for a tenant that has owners; no link exists until "
        "one of them approves it in the tenant portal.",
    )

    class Meta:
        model = Invitation
        fields = [
            "uid",
            "email",
            "role",
            "state",
            "created_by_label",
            "created_at",
            "expires_at",
            "last_sent_at",
            "send_count",
            "accepted_at",
            "revoked_at",
        ]
        read_only_fields = fields


class InvitationCreateSerializer(serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=TenantRole.choices, default=TenantRole.OWNER)


# --- KMS configurations --------------------------------------------------------------------------


#: the actions on a KMS configuration this API offers (keycore/api/urls.py), as keycore/key_rules.py names them
API_ACTIONS = (MAKE_PRIMARY, DECRYPT_ONLY, RETIRE)


def _actions(serializer: serializers.Serializer, config: KmsConfig) -> ConfigActions:
    """The caller's actions on ``config`` (keycore/key_rules.py), asked once per configuration and response."""
    context = serializer.context
    if "actor" not in context:
        request = context.get("request")
        context["actor"] = Actor.from_request(request) if request is not None else Actor(label="anonymous")
    answers = context.setdefault("config_actions", {})
    if config.pk not in answers:
        answers[config.pk] = kms_config_allowed_actions(
            config, context["actor"], memo=context.setdefault("key_rules_memo", {})
        )
    return answers[config.pk]


class KmsConfigSerializer(serializers.ModelSerializer):
    secret_fields_set = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="Names of the secrets that are set; never values."
    )
    allowed_actions = serializers.SerializerMethodField(
        help_text="Which of this API's actions on the configuration (`make_primary`, `decrypt_only`, `retire`) "
        "the caller may take now, given the configuration's owner and state and the tenant's sovereignty: the "
        "rule the services enforce and the portals show."
    )
    refused_actions = serializers.SerializerMethodField(
        help_text="Each of those actions the caller may not take now, with the reason a request would be refused."
    )

    class Meta:
        model = KmsConfig
        fields = [
            "uid",
            "name",
            "owner",
            "provider",
            "state",
            "is_primary",
            "settings",
            "secret_fields_set",
            "allowed_actions",
            "refused_actions",
            "rate_limit",
            "health",
            "health_detail",
            "health_checked_at",
            "last_success_at",
            "last_failure_at",
            "created_at",
            "updated_at",
            "state_changed_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.ChoiceField(choices=API_ACTIONS)))
    def get_allowed_actions(self, config: KmsConfig) -> list[str]:
        actions = _actions(self, config)
        return [a for a in API_ACTIONS if a in actions]

    @extend_schema_field(serializers.DictField(child=serializers.CharField()))
    def get_refused_actions(self, config: KmsConfig) -> dict[str, str]:
        reasons = _actions(self, config).reasons
        return {a: reasons[a] for a in API_ACTIONS if a in reasons}


class KmsConfigCreateSerializer(serializers.Serializer):
    provider = serializers.CharField(max_length=32, help_text="A provider the vendor may create: local, aws, kmip, …")
    name = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    settings = serializers.DictField(required=False, default=dict, help_text="The provider's non-secret settings.")
    secrets = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        default=dict,
        write_only=True,
        help_text="The provider's credentials. Write-only: stored sealed, never returned.",
    )
    rate_limit = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False, default=0)
    make_primary = serializers.BooleanField(
        required=False, default=False, help_text="Make it primary at once (starts a rekey job)."
    )


# --- history, jobs, events ------------------------------------------------------------------------


class KeyVersionWrapSerializer(serializers.Serializer):
    config = serializers.UUIDField(source="kms_config.uid")
    name = serializers.CharField(source="kms_config.name")
    owner = serializers.CharField(source="kms_config.owner", help_text="`tenant` (its own KMS) or `vendor`.")


class KeyVersionSerializer(serializers.ModelSerializer):
    """One tenant-key version: how much data KeyCore issued under it, and which keys can open it."""

    documents = serializers.IntegerField(
        read_only=True,
        help_text="Documents KeyCore issued under this version and that were not rekeyed away (encrypt adds, "
        "rekey moves). KeyCore counts what it issued, not what the application later deleted.",
    )
    vendor_held = serializers.BooleanField(
        read_only=True,
        help_text="Ever wrapped under a vendor-provided key: a backup from then, with the vendor's key, opens it.",
    )
    wrapped_under = KeyVersionWrapSerializer(source="wraps", many=True, read_only=True)

    class Meta:
        model = TenantKey
        fields = [
            "version",
            "state",
            "created_at",
            "retiring_at",
            "destroyed_at",
            "documents",
            "last_decrypt_at",
            "vendor_held",
            "wrapped_under",
        ]
        read_only_fields = fields


class KeyHistorySerializer(serializers.ModelSerializer):
    kms_config = serializers.SlugRelatedField(slug_field="uid", read_only=True, allow_null=True)
    actor = serializers.CharField(source="actor_label", read_only=True)

    class Meta:
        model = KeyHistoryEntry
        fields = ["at", "action", "kms_config", "config_name", "config_owner", "config_provider", "detail", "actor"]
        read_only_fields = fields


class RekeyJobSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="external_id", read_only=True, allow_null=True)
    source_config = serializers.SlugRelatedField(slug_field="uid", read_only=True, allow_null=True)
    target_config = serializers.SlugRelatedField(slug_field="uid", read_only=True, allow_null=True)
    started_by = serializers.CharField(source="started_by_label", read_only=True)
    progress_percent = serializers.IntegerField(read_only=True)

    class Meta:
        model = RekeyJob
        fields = [
            "uid",
            "kind",
            "tenant",
            "state",
            "total",
            "done",
            "failed",
            "progress_percent",
            "source_config",
            "target_config",
            "started_by",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
            "last_error",
            "pause_reason",
        ]
        read_only_fields = fields


class KeyUseEventSerializer(serializers.ModelSerializer):
    """``label``, ``requesting_id`` and ``source_ip`` are what the caller claimed; ``api_key`` and
    ``peer_ip`` what KeyCore saw; ``operations`` lists each operation for tenants in detailed mode."""

    api_key = serializers.SerializerMethodField()
    operations = serializers.SerializerMethodField()

    class Meta:
        model = KeyUseEvent
        fields = [
            "seq",
            "minute",
            "operation",
            "result",
            "count",
            "label",
            "requesting_id",
            "source_ip",
            "api_key",
            "peer_ip",
            "key_version",
            "operations",
            "created_at",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields

    @extend_schema_field(
        inline_serializer(
            "KeyUseApiKey",
            {"id": serializers.UUIDField(), "prefix": serializers.CharField(), "name": serializers.CharField()},
            allow_null=True,
        )
    )
    def get_api_key(self, event: KeyUseEvent) -> dict | None:
        if not event.api_key_uid:
            return None
        return {"id": str(event.api_key_uid), "prefix": event.api_key_prefix, "name": event.api_key_name}

    @extend_schema_field(serializers.ListField(child=serializers.DictField(), allow_null=True))
    def get_operations(self, event: KeyUseEvent) -> list[dict] | None:
        return detail_operations(event.details) if event.details else None


class AuditEventSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="external_id", read_only=True, allow_null=True)
    actor = serializers.CharField(source="actor_label", read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "chain",
            "seq",
            "tenant",
            "created_at",
            "action",
            "actor",
            "target_type",
            "target_id",
            "target_repr",
            "changes",
            "source_ip",
            "prev_hash",
            "hash",
        ]
        read_only_fields = fields


# --- for the schema only: problems and the crypto API (parsed by hand in keycore.api.crypto) -----------


class ProblemSerializer(serializers.Serializer):
    type = serializers.URLField(help_text="Stable: https://keycore.dev/problems/<code>.")
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Field name → messages ('__all__' for the request as a whole).",
    )


@extend_schema_field(OpenApiTypes.BYTE)
class Base64Field(serializers.CharField):
    """Standard base64 with padding (RFC 4648 §4)."""


# --- vendor keys ---------------------------------------------------------------------------------


class VendorKeySerializer(serializers.ModelSerializer):
    secret_fields_set = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="Names of the secrets that are set; never values."
    )
    where = serializers.CharField(read_only=True, help_text="Where the key lives (ARN, host, token), no secret.")
    tenants = serializers.IntegerField(read_only=True, help_text="Tenants whose primary key it is.")
    key_versions = serializers.IntegerField(read_only=True, help_text="Tenant-key versions wrapped under it.")
    documents = serializers.IntegerField(read_only=True, help_text="Documents encrypted under those versions.")

    class Meta:
        model = VendorKey
        fields = [
            "uid",
            "name",
            "provider",
            "state",
            "is_default",
            "settings",
            "secret_fields_set",
            "rate_limit",
            "health",
            "health_detail",
            "health_checked_at",
            "last_success_at",
            "last_failure_at",
            "created_at",
            "updated_at",
            "where",
            "tenants",
            "key_versions",
            "documents",
        ]
        read_only_fields = fields


class VendorKeyCreateSerializer(serializers.Serializer):
    provider = serializers.CharField(max_length=32, help_text="local, aws, kmip, pkcs11, openbao…")
    name = serializers.CharField(max_length=120, help_text='What your staff call it: "EU AWS key", "US HSM".')
    settings = serializers.DictField(required=False, default=dict, help_text="The provider's non-secret settings.")
    secrets = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        default=dict,
        write_only=True,
        help_text="The provider's credentials. Write-only: stored sealed, never returned.",
    )
    rate_limit = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False, default=0)
    make_default = serializers.BooleanField(required=False, default=False, help_text="The key of new tenants.")


class VendorKeySecretsSerializer(serializers.Serializer):
    secrets = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False),
        write_only=True,
        help_text="New credentials (tested before they replace the old ones). Write-only.",
    )


class VendorKeyAssignSerializer(serializers.Serializer):
    """Exactly one of: named tenants, a filter of the tenants list, or another vendor key's tenants."""

    tenants = serializers.ListField(
        child=serializers.CharField(max_length=128), required=False, max_length=1000, help_text="External ids."
    )
    filter = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        help_text="The tenants list's query parameters (q, status, key_ownership, provider, health, vendor_key).",
    )
    from_vendor_key = serializers.CharField(
        max_length=120, required=False, help_text="Every tenant this vendor key serves (uid or name)."
    )

    def validate(self, attrs):
        given = [name for name in ("tenants", "filter", "from_vendor_key") if name in attrs]
        if len(given) != 1:
            raise serializers.ValidationError("Give exactly one of tenants, filter or from_vendor_key.")
        return attrs


class VendorKeyMoveSerializer(serializers.Serializer):
    job = RekeyJobSerializer(allow_null=True, help_text="The rekey job that moves them; null if none needed to move.")
    refused = serializers.ListField(
        child=serializers.CharField(), help_text="External ids of tenants that own their key: never moved."
    )
