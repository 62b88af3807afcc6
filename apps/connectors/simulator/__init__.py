"""A stand-in for the messaging providers' APIs on loopback, for Parley's connectors, tests and
the demo: `python -m apps.connectors.simulator --port 8025`. Standard library only, no Django.

Add a provider by writing one module with a `Provider` subclass and listing it in PROVIDERS.
"""

from .core import Provider, Simulator, make_server
from .webchat import WebChat
from .whatsapp import WhatsApp

PROVIDERS: list[type[Provider]] = [WhatsApp, WebChat]


def build_simulator() -> Simulator:
    return Simulator(PROVIDERS)


__all__ = ["PROVIDERS", "Provider", "Simulator", "build_simulator", "make_server"]
