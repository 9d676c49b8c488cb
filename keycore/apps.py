from django.apps import AppConfig


class KeycoreConfig(AppConfig):
    name = "keycore"
    verbose_name = "KeyCore"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from keycore import checks, signals  # noqa: F401  (the secrets check; sign-in and MFA audit events)
        from keycore.metrics import count_rekey_batch
        from keycore.services.jobs.engine import batch_committed

        # rekey rates for the metrics; dispatch_uid: ready() may run twice in tests
        batch_committed.connect(count_rekey_batch, dispatch_uid="keycore.metrics.rekey")
