"""Create (or promote) a vendor administrator: the operator's first step on a new installation."""

from __future__ import annotations

import getpass

from django.core.management.base import BaseCommand, CommandError

from keycore import errors
from keycore.roles import VendorRole
from keycore.services.audit import Actor
from keycore.services.tenants import staff_create


class Command(BaseCommand):
    help = "Create a vendor staff account (default role: admin). Prompts for the password unless --password is given."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("--role", default=VendorRole.ADMIN, choices=VendorRole.values)
        parser.add_argument("--password", help="Avoid on shared machines: it ends up in shell history.")

    def handle(self, *args, email: str, role: str, password: str | None, **options):
        if password is None:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("The passwords differ.")
        try:
            staff = staff_create(email=email, role=role, password=password, actor=Actor.system("manage.py"))
        except errors.KeyCoreError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(self.style.SUCCESS(f"{staff.user.email} is vendor {staff.get_role_display().lower()}."))
