from django.apps import AppConfig


class KeycoreConfig(AppConfig):
    name = "keycore"
    verbose_name = "KeyCore"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from keycore import checks, signals  # noqa: F401  (the secrets check; sign-in and MFA audit events)
