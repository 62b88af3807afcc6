from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "Parley core"

    def ready(self):
        from apps.core.api import schema  # noqa: F401  (registers the OpenAPI auth scheme)
