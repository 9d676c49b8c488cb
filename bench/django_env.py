"""Bring up Django for a benchmark: a throwaway SQLite database (or DATABASE_URL, if set), migrated.

Benchmarks measure KeyCore as deployed code runs it: through the services, with
the key cache, the revocation epoch and key-use recording switched on.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def setup_django(*, keep: Path | None = None) -> Path:
    """Configure and migrate; returns the scratch folder holding var/ (and the SQLite file)."""
    folder = keep or Path(tempfile.mkdtemp(prefix="keycore-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("KEYCORE_VAR_DIR", str(folder / "var"))
    os.environ.setdefault("KEYCORE_REQUIRE_ADMIN_MFA", "0")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return folder
