"""Generate a root key, or show which root key is in use (its fingerprint, never the key)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from keycore.checks import require_secrets
from keycore.crypto.rootkey import generate_root_key_text
from keycore.sealing import root_keyring


class Command(BaseCommand):
    help = "Print a new random root key (base64) for KEYCORE_ROOT_KEY, or the fingerprint of the current one."
    # --generate is how an operator gets the root key every other command checks for: it must run without one
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--generate", action="store_true", help="print a new key")

    def handle(self, *args, generate: bool, **options):
        if generate:
            self.stdout.write(generate_root_key_text())
            return

        require_secrets()
        self.stdout.write(f"current root key: {root_keyring().current_id}")
