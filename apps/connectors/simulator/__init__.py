"""A stand-in for the messaging providers' APIs on loopback, for Parley's connectors, tests and
the demo: `python -m apps.connectors.simulator --port 8025`. Standard library only, no Django.

Add a provider by writing one module with a `Provider` subclass (most subclass
`chat.ChatProvider`); it is found here by its `kind`. WhatsApp comes first: Messenger shares
Graph paths such as `/{id}/messages`, and WhatsApp's routes step aside for ids it does not own.
"""

import importlib
import pkgutil

from .core import Provider, Simulator, make_server
from .webchat import WebChat
from .whatsapp import WhatsApp


def _discovered() -> list[type[Provider]]:
    found: list[type[Provider]] = []
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Provider)
                and value.kind
                and value.__module__ == module.__name__
                and value not in (WhatsApp, WebChat)
                and value not in found
            ):
                found.append(value)
    return found


PROVIDERS: list[type[Provider]] = [WhatsApp, WebChat, *_discovered()]


def build_simulator() -> Simulator:
    return Simulator(PROVIDERS)


__all__ = ["PROVIDERS", "Provider", "Simulator", "build_simulator", "make_server"]
