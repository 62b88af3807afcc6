"""Finds every connector module in apps/connectors/providers/ by its `Connector` subclass."""

import importlib
import pkgutil
from functools import cache

from apps.connectors import providers
from apps.connectors.base import Connector


@cache
def connectors() -> dict[str, Connector]:
    found = {}
    for module_info in pkgutil.iter_modules(providers.__path__):
        module = importlib.import_module(f"{providers.__name__}.{module_info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Connector) and value.kind:
                found[value.kind] = value()
    return found


def connector_for(channel) -> Connector:
    return connectors()[channel.kind]
