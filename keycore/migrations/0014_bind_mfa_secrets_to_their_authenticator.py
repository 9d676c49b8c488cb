"""MFA secrets sealed under the one context "allauth" are re-sealed bound to their row's user and kind.

Until now a sealed TOTP secret or recovery-code seed could be copied into another user's row and would
answer to the first user's codes there. After this migration only bound values are accepted
(``keycore.sealing``); a legacy value left anywhere is refused when read.
"""

from django.db import migrations

from keycore.sealing import MFA_LEGACY_MARKER, bind_mfa_secrets


def _has_legacy(data) -> bool:
    return MFA_LEGACY_MARKER in str(data)


def bind(apps, schema_editor):
    Authenticator = apps.get_model("mfa", "Authenticator")
    for row in Authenticator.objects.order_by("pk").iterator(chunk_size=2000):
        if _has_legacy(row.data):
            data = bind_mfa_secrets(row.data, user_id=row.user_id, kind=row.type)
            Authenticator.objects.filter(pk=row.pk).update(data=data)


class Migration(migrations.Migration):
    dependencies = [
        ("keycore", "0013_vendor_keys"),
        ("mfa", "0003_authenticator_type_uniq"),
    ]

    # no way back: the unbound form is the weakness this removes
    operations = [migrations.RunPython(bind, migrations.RunPython.noop, elidable=False)]
