"""A KeyCore process does not run without its secrets: one rule, asked by every entry point.

Production settings leave a missing ``SECRET_KEY`` or ``KEYCORE_ROOT_KEY`` empty
instead of failing at import (config/settings.py), so that ``manage.py
keycore_root_key --generate`` can make the root key the others need. Everything
else refuses to start without them:

* the web application: ``config/wsgi.py`` and ``config/asgi.py`` call
  :func:`require_secrets` before they answer anything;
* the Celery worker and beat: ``config/celery.py`` calls it when either starts;
* management commands: :func:`check_secrets` is a Django system check, which every
  command runs first unless it opts out (only ``keycore_root_key`` does, and it
  still needs the key to show its fingerprint).

A root key wrapped by a KMS (``KEYCORE_ROOT_KEY_WRAPPED``, keycore/unseal.py) is
unwrapped here, at start: a process whose KMS refuses or stays unreachable after
the bounded retries does not start, and says which KMS and why.
"""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from keycore import errors
from keycore.sealing import root_keyring

GENERATE_HINT = "generate one with `python manage.py keycore_root_key --generate`"


def missing_secrets() -> dict[str, str]:
    """What is missing or malformed (check id → sentence); empty when the process may start."""
    problems = {}
    try:
        settings.SECRET_KEY  # noqa: B018 - Django raises here when it is empty
    except ImproperlyConfigured:
        problems["keycore.E001"] = "SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off."
    if settings.KEYCORE_ROOT_KEY and settings.KEYCORE_ROOT_KEY_WRAPPED:
        problems["keycore.E004"] = (
            "KEYCORE_ROOT_KEY and KEYCORE_ROOT_KEY_WRAPPED are both set: give the root key one way, "
            "the KMS-wrapped one alone once you have moved to it."
        )
    elif not settings.KEYCORE_ROOT_KEY and not settings.KEYCORE_ROOT_KEY_WRAPPED:
        problems["keycore.E002"] = (
            "KEYCORE_ROOT_KEY (or KEYCORE_ROOT_KEY_FILE, or a KMS-wrapped KEYCORE_ROOT_KEY_WRAPPED) must be set when "
            f"DEBUG is off: {GENERATE_HINT}."
        )
    else:
        try:
            root_keyring()
        except (errors.ProviderError, errors.AuthenticationFailed) as exc:
            # the KMS would not unwrap it: the message names the KMS, the key and the reason, never the root key
            problems["keycore.E005"] = f"The root key could not be unwrapped (KEYCORE_ROOT_KEY_WRAPPED): {exc.detail}"
        except errors.KeyCoreError as exc:
            problems["keycore.E003"] = (
                "KEYCORE_ROOT_KEY, KEYCORE_ROOT_KEY_WRAPPED or KEYCORE_ROOT_KEY_PREVIOUS is not a root key: "
                f"{exc.detail}"
            )
    return problems


def require_secrets() -> None:
    """Raise ImproperlyConfigured, naming each missing secret, unless the process may start."""
    problems = missing_secrets()
    if problems:
        raise ImproperlyConfigured(" ".join(problems.values()))


@checks.register()
def check_secrets(app_configs, **kwargs) -> list[checks.CheckMessage]:
    return [checks.Error(message, id=check_id) for check_id, message in missing_secrets().items()]
