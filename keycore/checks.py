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
    if not settings.KEYCORE_ROOT_KEY:
        problems["keycore.E002"] = (
            f"KEYCORE_ROOT_KEY (or KEYCORE_ROOT_KEY_FILE) must be set when DEBUG is off: {GENERATE_HINT}."
        )
    else:
        try:
            root_keyring()
        except errors.KeyCoreError as exc:
            problems["keycore.E003"] = f"KEYCORE_ROOT_KEY or KEYCORE_ROOT_KEY_PREVIOUS is not a root key: {exc.detail}"
    return problems


def require_secrets() -> None:
    """Raise ImproperlyConfigured, naming each missing secret, unless the process may start."""
    problems = missing_secrets()
    if problems:
        raise ImproperlyConfigured(" ".join(problems.values()))


@checks.register()
def check_secrets(app_configs, **kwargs) -> list[checks.CheckMessage]:
    return [checks.Error(message, id=check_id) for check_id, message in missing_secrets().items()]
