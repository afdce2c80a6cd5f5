from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        from . import admin  # noqa: F401  (registers ModelAdmins from portal/admin/)
