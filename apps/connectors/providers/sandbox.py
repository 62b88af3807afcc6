"""The try-it sandbox: a channel whose messages never leave Parley.

A supervisor plays the customer on a workflow's "try it" page (apps/workflows/views.py); what
they type is stored through the ordinary inbound pipeline and the bot's answers through the
ordinary outbound one, so the workflow behaves exactly as it will on a real channel. Sending
only hands back a provider id; there is no provider, hence no webhook: the page itself is the
customer's side. Menus are shown as buttons (native options), so `numbered_menus` stays off.
"""

import uuid

from apps.connectors.base import (
    Connector,
    ErrorClass,
    MediaFile,
    OutboundMessage,
    ParseError,
    ProviderError,
    SendResult,
)


class SandboxConnector(Connector):
    kind = "sandbox"
    reply_window_hours = None  # nobody to annoy: the bot and operators may always answer
    numbered_menus = False

    def verify(self, channel, raw_body: bytes, headers, query=None) -> bool:
        return False  # no public inbound: the try-it page stores the customer's side itself

    def parse(self, channel, raw_body: bytes, headers=None) -> list:
        raise ParseError("the try-it sandbox takes no webhooks")

    def send(self, channel, message: OutboundMessage) -> SendResult:
        return SendResult(provider_id=f"sandbox-{uuid.uuid4().hex}")

    def fetch_media(self, channel, media: dict, max_bytes: int) -> MediaFile:
        raise ProviderError(ErrorClass.FATAL, "sandbox", "The try-it sandbox has no files to fetch.")
