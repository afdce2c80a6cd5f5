from django.apps import AppConfig


class OrchestratorConfig(AppConfig):
    name = "orchestrator"
    verbose_name = "Orchestrator"

    def ready(self) -> None:
        from ledger.signals import jobs_ready

        from . import checks, wakeups  # noqa: F401  (checks registers system checks)
        from .api import schema  # noqa: F401  (registers OpenAPI extensions)

        jobs_ready.connect(wakeups.notify, dispatch_uid="orchestrator.wakeups")
