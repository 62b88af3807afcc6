"""WhatsApp Cloud API wire formats, as pure functions: Graph error bodies, webhook envelopes,
inbound message objects, status objects, send-payload validation and the template catalog.

Shapes follow Meta's Cloud API reference (webhooks "messages" field, `POST /{phone-number-id}/
messages`, error codes page); the limits are the documented ones, cited next to each.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

ERROR_DOCS = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"

# code: (title, default details, HTTP status of the synchronous Graph answer).
# Meta's error-code table answers throttling (130429, 131056) with 400, not 429.
ERRORS: dict[int, tuple[str, str, int]] = {
    4: ("API Too Many Calls", "The app has reached its API call rate limit.", 400),
    100: ("Invalid parameter", "The request included an invalid or unsupported parameter.", 400),
    190: ("Access token has expired", "Invalid OAuth access token.", 401),
    80007: ("Rate limit issues", "The WhatsApp Business Account has reached its rate limit.", 400),
    130429: (
        "Rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number in a short period of time.",
        400,
    ),
    130472: ("User's number is part of an experiment", "Message not sent (experiment).", 400),
    131000: ("Something went wrong", "Message failed to send due to an unknown error.", 500),
    131008: ("Required parameter is missing", "A required parameter is missing.", 400),
    131009: ("Parameter value is not valid", "A parameter value is not valid.", 400),
    131026: (
        "Message undeliverable",
        "Unable to deliver message. The recipient may not be a WhatsApp user or may have blocked the business.",
        400,
    ),
    131047: (
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last "
        "replied to this number.",
        400,
    ),
    131049: (
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "Marketing message not delivered to keep engagement healthy.",
        400,
    ),
    131050: (
        "Unable to deliver the message. This recipient has chosen to stop receiving marketing "
        "messages on WhatsApp from your business.",
        "The recipient opted out of marketing messages.",
        400,
    ),
    131051: ("Unsupported message type", "Message type is currently not supported.", 400),
    131053: ("Media upload error", "Unable to upload the media used in the message.", 400),
    131056: (
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
        400,
    ),
    132000: (
        "Number of parameters does not match the expected number of params",
        "The number of variable parameter values does not match the template.",
        400,
    ),
    132001: ("Template does not exist", "The template does not exist in this language.", 404),
    132012: ("Parameter format does not match format in the created template", "", 400),
    132015: ("Template is paused", "The template is paused due to low quality.", 400),
    132016: ("Template is disabled", "The template has been paused too many times.", 400),
}

SEND_TYPES = (
    "text",
    "image",
    "document",
    "audio",
    "video",
    "sticker",
    "interactive",
    "template",
    "location",
    "reaction",
    "contacts",
)
MEDIA_TYPES = ("image", "document", "audio", "video", "sticker")
INTERACTIVE_TYPES = ("button", "list", "cta_url", "product", "product_list", "flow")
STATUS_ORDER = ("accepted", "sent", "delivered", "read")  # "failed" is terminal, outside it


class GraphError(Exception):
    """A Cloud API error: raised while checking a send, rendered by `graph_error_body`."""

    def __init__(
        self,
        code: int,
        details: str = "",
        *,
        message: str = "",
        http_status: int = 0,
        subcode: int | None = None,
        user_title: str = "",
        user_msg: str = "",
    ):
        title, default_details, default_status = ERRORS.get(code, ("Error", "", 400))
        self.code = code
        # The Business Management API's errors also carry a subcode and words meant for the person
        # who wrote the template (WhatsApp Manager shows them).
        self.subcode, self.user_title, self.user_msg = subcode, user_title, user_msg
        self.title = title
        self.details = details or default_details
        # Meta's message is "(#code) Title"; a validation problem is named there as well, so a
        # developer reading a log line sees what to fix without digging into error_data.
        suffix = f": {details}" if details and code in (100, 131008, 131009) else ""
        self.message = message or f"(#{code}) {title}{suffix}"
        self.http_status = http_status or default_status
        super().__init__(self.message)

    def body(self, *, subcode: int | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": "OAuthException", "code": self.code}
        subcode = self.subcode if subcode is None else subcode
        if subcode is not None:
            error["error_subcode"] = subcode
        if self.user_title or self.user_msg:
            error.update(is_transient=False, error_user_title=self.user_title, error_user_msg=self.user_msg)
        if self.code != 190:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
        return {"error": error}

    def webhook_error(self) -> dict[str, Any]:
        """The same error as it appears in a `failed` status's `errors` list."""
        return {
            "code": self.code,
            "title": self.title,
            "message": self.title,
            "error_data": {"details": self.details},
            "href": ERROR_DOCS,
        }


def invalid_token_error() -> GraphError:
    message = "Invalid OAuth access token - Cannot parse access token"
    return GraphError(190, message, message=message)


# Ids and serialisation ---------------------------------------------------------------------------


def new_wamid() -> str:
    # Real wamids are base64 of an opaque blob; keep to letters and digits so tests and URLs
    # need no escaping.
    blob = base64.b64encode(os.urandom(36)).decode()
    return "wamid.HBgM" + blob.replace("+", "A").replace("/", "B")


def new_numeric_id() -> str:
    return str(10**15 + secrets.randbelow(9 * 10**15))


def unix_now() -> str:
    return str(int(time.time()))


def wire_bytes(payload: Any) -> bytes:
    """Serialise like Meta: compact, non-ASCII as \\uXXXX and "/" escaped as "\\/". A connector
    that re-serialises the parsed body before checking the signature will fail here, as it
    would in production."""
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()


def digits_of(number: Any) -> str:
    return re.sub(r"\D", "", str(number or ""))


def is_dialable(to: str) -> bool:
    stripped = re.sub(r"[\s()\-+]", "", to)
    return stripped.isdigit() and 5 <= len(stripped) <= 15


# Webhook envelopes -------------------------------------------------------------------------------


def envelope(channel: Any, value: dict[str, Any]) -> dict[str, Any]:
    metadata = {
        "display_phone_number": digits_of(channel.display_phone_number),
        "phone_number_id": channel.phone_number_id,
    }
    change = {"value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}
    change["field"] = "messages"
    return {"object": "whatsapp_business_account", "entry": [{"id": channel.waba_id, "changes": [change]}]}


def messages_envelope(channel: Any, wa_id: str, name: str, message: dict[str, Any]) -> dict:
    contacts = [{"profile": {"name": name}, "wa_id": wa_id}]
    return envelope(channel, {"contacts": contacts, "messages": [message]})


def statuses_envelope(channel: Any, status: dict[str, Any]) -> dict[str, Any]:
    return envelope(channel, {"statuses": [status]})


# Inbound (customer) messages ---------------------------------------------------------------------


@dataclass(frozen=True)
class MediaRef:
    """The stored file an inbound media message points at."""

    id: str
    mime_type: str
    sha256: str
    filename: str


def inbound_message(
    body: dict[str, Any],
    *,
    wamid: str,
    wa_id: str,
    timestamp: str,
    business_number: str,
    media: MediaRef | None,
) -> dict[str, Any]:
    """The `messages[]` item a customer's message becomes; ValueError names a bad control call."""
    kind = body.get("type", "text")
    message: dict[str, Any] = {"from": wa_id, "id": wamid, "timestamp": timestamp, "type": kind}
    context = body.get("context")
    if isinstance(context, dict) and context.get("id"):
        message["context"] = {"from": business_number, "id": context["id"]}
    builder = _INBOUND_BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"type must be one of {sorted(_INBOUND_BUILDERS)}, not {kind!r}")
    message.update(builder(body, media))
    if isinstance(body.get("extra"), dict):  # e.g. a `referral` from a click-to-WhatsApp ad
        message.update(body["extra"])
    return message


def _text(body: dict, media: MediaRef | None) -> dict:
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty string")
    return {"text": {"body": text}}


def _interactive(body: dict, media: MediaRef | None) -> dict:
    reply = body.get("reply")
    if not isinstance(reply, dict) or reply.get("type") not in ("button_reply", "list_reply"):
        raise ValueError('reply must be {"type": "button_reply"|"list_reply", "id", "title"}')
    if not reply.get("id") or not reply.get("title"):
        raise ValueError("reply needs an id and a title")
    answer = {"id": str(reply["id"]), "title": str(reply["title"])}
    if reply["type"] == "list_reply" and reply.get("description"):
        answer["description"] = str(reply["description"])
    return {"interactive": {"type": reply["type"], reply["type"]: answer}}


def _button(body: dict, media: MediaRef | None) -> dict:
    if not body.get("payload") and not body.get("text"):
        raise ValueError("a button message needs a payload and/or a text")
    text = str(body.get("text") or body.get("payload"))
    return {"button": {"payload": str(body.get("payload") or text), "text": text}}


def _media(body: dict, media: MediaRef | None) -> dict:
    assert media is not None  # the provider stores the file before building the message
    kind = body.get("type")
    item: dict[str, Any] = {"mime_type": media.mime_type, "sha256": media.sha256, "id": media.id}
    if body.get("caption") and kind in ("image", "video", "document"):
        item["caption"] = str(body["caption"])
    if kind == "document":
        item["filename"] = media.filename
    if kind == "audio":
        item["voice"] = bool(body.get("voice", True))
    if kind == "sticker":
        item["animated"] = False
    return {kind: item}


def _location(body: dict, media: MediaRef | None) -> dict:
    try:
        location: dict[str, Any] = {
            "latitude": float(body["latitude"]),
            "longitude": float(body["longitude"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("location needs numeric latitude and longitude") from exc
    for key in ("name", "address", "url"):
        if body.get(key):
            location[key] = str(body[key])
    return {"location": location}


def _reaction(body: dict, media: MediaRef | None) -> dict:
    if not body.get("message_id"):
        raise ValueError("a reaction needs the message_id it reacts to")
    return {"reaction": {"message_id": str(body["message_id"]), "emoji": str(body.get("emoji", ""))}}


def _unsupported(body: dict, media: MediaRef | None) -> dict:
    error = GraphError(131051).webhook_error()
    error.pop("href")
    return {"errors": [error], "unsupported": {"type": str(body.get("original_type", "unknown"))}}


_INBOUND_BUILDERS = {
    "text": _text,
    "interactive": _interactive,
    "button": _button,
    "location": _location,
    "reaction": _reaction,
    "unsupported": _unsupported,
    **dict.fromkeys(MEDIA_TYPES, _media),
}


# Status callbacks --------------------------------------------------------------------------------


def status_object(
    *,
    wamid: str,
    status: str,
    wa_id: str,
    category: str | None,
    conversation_id: str,
    callback_data: str | None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One `statuses[]` item. Pricing and conversation ride on sent/delivered, as Meta's do;
    `category` is the template's category, or None for a free-form (service) message."""
    item: dict[str, Any] = {
        "id": wamid,
        "status": status,
        "timestamp": unix_now(),
        "recipient_id": wa_id,
    }
    if status in ("sent", "delivered") and not errors:
        origin = category or "service"
        item["conversation"] = {"id": conversation_id, "origin": {"type": origin}}
        billable = origin != "service"
        item["pricing"] = {
            "billable": billable,
            "pricing_model": "PMP",
            "category": origin,
            "type": "regular" if billable else "free_customer_service",
        }
    if callback_data is not None:
        item["biz_opaque_callback_data"] = callback_data
    if errors:
        item["errors"] = errors
    return item


# Send validation ---------------------------------------------------------------------------------


def validate_send(body: Any) -> str:
    """Check a `POST /{phone-number-id}/messages` body the way the Cloud API does, before it
    accepts the message; returns the message type or raises GraphError naming the problem."""
    if not isinstance(body, dict):
        raise GraphError(100, "the request body must be a JSON object")
    if body.get("messaging_product") != "whatsapp":
        raise GraphError(100, "messaging_product is required and must be 'whatsapp'")
    if body.get("recipient_type", "individual") != "individual":
        raise GraphError(100, "recipient_type must be 'individual'")
    if not isinstance(body.get("to"), str) or not body["to"].strip():
        raise GraphError(100, "to is required (the customer's phone number or wa_id)")
    kind = body.get("type", "text")  # Meta defaults a missing type to text
    if kind not in SEND_TYPES:
        raise GraphError(100, f"type must be one of {', '.join(SEND_TYPES)}; got {kind!r}")
    content = body.get(kind)
    expected = list if kind == "contacts" else dict
    if not isinstance(content, expected):
        raise GraphError(100, f"{kind} object is required for a message of type {kind}")
    _SEND_CHECKS[kind](content, kind)
    context = body.get("context")
    if context is not None and not (isinstance(context, dict) and context.get("message_id")):
        raise GraphError(100, "context must be an object with message_id")
    return kind


def _require_text(value: Any, where: str, *, max_length: int, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip():
        raise GraphError(100, f"{where} is required and must be a non-empty string")
    if len(value) > max_length:
        raise GraphError(131009, f"{where} is longer than {max_length} characters ({len(value)})")


def _check_text(text: dict, kind: str) -> None:
    _require_text(text.get("body"), "text.body", max_length=4096)


def _check_media(media: dict, kind: str) -> None:
    if bool(media.get("id")) == bool(media.get("link")):
        raise GraphError(100, f"{kind} needs exactly one of 'id' or 'link'")
    if "caption" in media:
        if kind in ("audio", "sticker"):
            raise GraphError(100, f"{kind} does not take a caption")
        _require_text(media["caption"], f"{kind}.caption", max_length=1024)


def _check_interactive(interactive: dict, kind: str) -> None:
    itype = interactive.get("type")
    if itype not in INTERACTIVE_TYPES:
        raise GraphError(100, f"interactive.type must be one of {', '.join(INTERACTIVE_TYPES)}")
    if not isinstance(interactive.get("action"), dict):
        raise GraphError(100, "interactive.action is required")
    body = interactive.get("body") or {}
    required = itype in ("button", "list", "cta_url")
    _require_text(body.get("text"), "interactive.body.text", max_length=1024, required=required)
    footer = (interactive.get("footer") or {}).get("text")
    _require_text(footer, "interactive.footer.text", max_length=60, required=False)
    header = interactive.get("header") or {}
    if header.get("type") == "text":
        _require_text(header.get("text"), "interactive.header.text", max_length=60)
    if itype == "button":
        _check_reply_buttons(interactive["action"])
    elif itype == "list":
        _check_list(interactive["action"])


def _check_reply_buttons(action: dict) -> None:
    buttons = action.get("buttons")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
        raise GraphError(131009, "interactive.action.buttons must hold 1 to 3 reply buttons")
    seen = set()
    for index, button in enumerate(buttons):
        where = f"interactive.action.buttons[{index}]"
        if not isinstance(button, dict) or button.get("type") != "reply":
            raise GraphError(100, f"{where}.type must be 'reply'")
        reply = button.get("reply") or {}
        _require_text(reply.get("id"), f"{where}.reply.id", max_length=256)
        _require_text(reply.get("title"), f"{where}.reply.title", max_length=20)
        if reply["id"] in seen:
            raise GraphError(131009, f"{where}.reply.id {reply['id']!r} is not unique")
        seen.add(reply["id"])


def _check_list(action: dict) -> None:
    _require_text(action.get("button"), "interactive.action.button", max_length=20)
    sections = action.get("sections")
    if not isinstance(sections, list) or not 1 <= len(sections) <= 10:
        raise GraphError(131009, "interactive.action.sections must hold 1 to 10 sections")
    rows = 0
    for s_index, section in enumerate(sections):
        where = f"interactive.action.sections[{s_index}]"
        if not isinstance(section, dict) or not isinstance(section.get("rows"), list):
            raise GraphError(100, f"{where}.rows is required")
        title = section.get("title")
        _require_text(title, f"{where}.title", max_length=24, required=len(sections) == 1)
        for r_index, row in enumerate(section["rows"]):
            _check_row(row, f"{where}.rows[{r_index}]")
        rows += len(section["rows"])
    if not 1 <= rows <= 10:
        raise GraphError(131009, f"a list holds 1 to 10 rows in all sections, not {rows}")


def _check_row(row: Any, where: str) -> None:
    if not isinstance(row, dict):
        raise GraphError(100, f"{where} must be an object")
    _require_text(row.get("id"), f"{where}.id", max_length=200)
    _require_text(row.get("title"), f"{where}.title", max_length=24)
    _require_text(row.get("description"), f"{where}.description", max_length=72, required=False)


def _check_template(template: dict, kind: str) -> None:
    if not isinstance(template.get("name"), str) or not template["name"]:
        raise GraphError(100, "template.name is required")
    language = template.get("language")
    if not isinstance(language, dict) or not isinstance(language.get("code"), str):
        raise GraphError(100, "template.language.code is required")
    components = template.get("components", [])
    if not isinstance(components, list):
        raise GraphError(100, "template.components must be a list")
    for index, component in enumerate(components):
        ctype = component.get("type") if isinstance(component, dict) else None
        if str(ctype).lower() not in ("header", "body", "button", "footer"):
            raise GraphError(100, f"template.components[{index}].type must be header|body|button")
        if not isinstance(component.get("parameters", []), list):
            raise GraphError(100, f"template.components[{index}].parameters must be a list")


def _check_location(location: dict, kind: str) -> None:
    for key in ("latitude", "longitude"):
        try:
            float(location[key])
        except (KeyError, TypeError, ValueError) as exc:
            raise GraphError(100, f"location.{key} is required and must be a number") from exc


def _check_reaction(reaction: dict, kind: str) -> None:
    if not isinstance(reaction.get("message_id"), str) or not reaction["message_id"]:
        raise GraphError(100, "reaction.message_id is required")
    if not isinstance(reaction.get("emoji", ""), str):
        raise GraphError(100, "reaction.emoji must be a string (empty removes the reaction)")


def _check_contacts(contacts: list, kind: str) -> None:
    if not contacts:
        raise GraphError(100, "contacts must hold at least one contact")
    for index, contact in enumerate(contacts):
        name = contact.get("name") if isinstance(contact, dict) else None
        if not isinstance(name, dict) or not name.get("formatted_name"):
            raise GraphError(100, f"contacts[{index}].name.formatted_name is required")


_SEND_CHECKS = {
    "text": _check_text,
    "interactive": _check_interactive,
    "template": _check_template,
    "location": _check_location,
    "reaction": _check_reaction,
    "contacts": _check_contacts,
    **dict.fromkeys(MEDIA_TYPES, _check_media),
}


# Templates ---------------------------------------------------------------------------------------
# Each business account (WABA) starts with this catalog, shaped like Meta's
# `GET /{waba-id}/message_templates` entries; the control API adds, changes and deletes entries
# per account. Sends of a catalog template are checked against it as the Cloud API does: the
# language, the status, and the parameters of the header, the body and each varying button.

TEMPLATES: list[dict[str, Any]] = [
    {
        "name": "order_update",
        "parameter_format": "POSITIONAL",
        "components": [
            {
                "type": "BODY",
                "text": "مرحباً {{1}}، طلبك {{2}} {{3}}.",
                "example": {"body_text": [["أميرة", "#1042", "في الطريق"]]},
            }
        ],
        "language": "ar",
        "status": "APPROVED",
        "category": "UTILITY",
        "id": "1100000000000011",
    },
    {
        "name": "order_update",
        "parameter_format": "POSITIONAL",
        "components": [
            {
                "type": "BODY",
                "text": "Hi {{1}}, your order {{2}} is {{3}}.",
                "example": {"body_text": [["Amira", "#1042", "on its way"]]},
            }
        ],
        "language": "en",
        "status": "APPROVED",
        "category": "UTILITY",
        "id": "1100000000000001",
    },
    {
        "name": "we_miss_you",
        "parameter_format": "POSITIONAL",
        "components": [
            {
                "type": "BODY",
                "text": "Hi {{1}}, it has been a while! Enjoy {{2}} off your next basket with code {{3}}.",
                "example": {"body_text": [["Amira", "15%", "COMEBACK15"]]},
            },
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {
                "type": "BUTTONS",
                "buttons": [
                    {"type": "QUICK_REPLY", "text": "Shop now"},
                    {"type": "QUICK_REPLY", "text": "Stop promotions"},
                ],
            },
        ],
        "language": "en",
        "status": "APPROVED",
        "category": "MARKETING",
        "id": "1100000000000002",
    },
    {
        "name": "back_in_stock",
        "parameter_format": "POSITIONAL",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Back in stock"},
            {
                "type": "BODY",
                "text": "Good news, {{1}}! {{2}} is back in stock.",
                "example": {"body_text": [["Amira", "Medjool dates 1 kg"]]},
            },
            {
                "type": "BUTTONS",
                "buttons": [
                    {"type": "URL", "text": "Shop now", "url": "https://shop.example.com/new-in"},
                    {"type": "QUICK_REPLY", "text": "Not interested"},
                ],
            },
        ],
        "language": "en",
        "status": "APPROVED",
        "category": "MARKETING",
        "id": "1100000000000003",
    },
    {
        "name": "delivery_window",
        "parameter_format": "POSITIONAL",
        "components": [
            {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}", "example": {"header_text": ["#1042"]}},
            {
                "type": "BODY",
                "text": "Hi {{1}}, your courier arrives between {{2}} and {{3}} today.",
                "example": {"body_text": [["Amira", "14:00", "16:00"]]},
            },
            {"type": "FOOTER", "text": "Nile Basket deliveries"},
            {
                "type": "BUTTONS",
                "buttons": [
                    {
                        "type": "URL",
                        "text": "Track my order",
                        "url": "https://shop.example.com/track/{{1}}",
                        "example": ["https://shop.example.com/track/1042"],
                    },
                    {"type": "PHONE_NUMBER", "text": "Call the courier", "phone_number": "+201001230000"},
                ],
            },
        ],
        "language": "en",
        "status": "APPROVED",
        "category": "UTILITY",
        "id": "1100000000000004",
    },
    {
        "name": "spring_sale",
        "parameter_format": "NAMED",
        "components": [
            {
                "type": "HEADER",
                "format": "TEXT",
                "text": "The {{season}} sale is on",
                "example": {"header_text_named_params": [{"param_name": "season", "example": "spring"}]},
            },
            {
                "type": "BODY",
                "text": "Hi {{first_name}}, take {{discount}} off everything with code {{code}}.",
                "example": {
                    "body_text_named_params": [
                        {"param_name": "first_name", "example": "Amira"},
                        {"param_name": "discount", "example": "20%"},
                        {"param_name": "code", "example": "SPRING20"},
                    ]
                },
            },
            {"type": "FOOTER", "text": "Reply STOP to opt out"},
            {
                "type": "BUTTONS",
                "buttons": [
                    {
                        "type": "URL",
                        "text": "Shop the sale",
                        "url": "https://shop.example.com/sale/{{1}}",
                        "example": ["https://shop.example.com/sale/spring"],
                    },
                    {"type": "QUICK_REPLY", "text": "Stop promotions"},
                ],
            },
        ],
        "language": "en",
        "status": "APPROVED",
        "category": "MARKETING",
        "id": "1100000000000005",
    },
    {
        "name": "login_code",
        "parameter_format": "POSITIONAL",
        "components": [
            {
                "type": "BODY",
                "text": "*{{1}}* is your verification code. For your security, do not share this code.",
                "example": {"body_text": [["482910"]]},
            },
            {"type": "FOOTER", "text": "This code expires in 10 minutes."},
            {"type": "BUTTONS", "buttons": [{"type": "OTP", "otp_type": "COPY_CODE", "text": "Copy code"}]},
        ],
        "language": "en",
        "status": "APPROVED",
        "category": "AUTHENTICATION",
        "id": "1100000000000006",
    },
    {
        "name": "loyalty_points",
        "parameter_format": "POSITIONAL",
        "components": [
            {
                "type": "BODY",
                "text": "Hi {{1}}, you have {{2}} points to spend before {{3}}.",
                "example": {"body_text": [["Amira", "1,250", "31 May"]]},
            }
        ],
        "language": "en",
        "status": "PENDING",
        "category": "MARKETING",
        "id": "1100000000000007",
    },
    {
        "name": "flash_deal",
        "parameter_format": "POSITIONAL",
        "components": [
            {
                "type": "BODY",
                "text": "{{1}}: everything half price for the next hour!",
                "example": {"body_text": [["Amira"]]},
            }
        ],
        "language": "en",
        "status": "REJECTED",
        "rejected_reason": "INVALID_FORMAT",
        "category": "MARKETING",
        "id": "1100000000000008",
    },
    {
        "name": "winter_clearance",
        "parameter_format": "POSITIONAL",
        "components": [
            {
                "type": "HEADER",
                "format": "IMAGE",
                "example": {"header_handle": ["https://example.com/sample/sale.png"]},
            },
            {
                "type": "BODY",
                "text": "Hi {{1}}, our winter stock is {{2}} off until Sunday.",
                "example": {"body_text": [["Amira", "40%"]]},
            },
        ],
        "language": "en",
        "status": "PAUSED",
        "category": "MARKETING",
        "id": "1100000000000009",
    },
]
TEMPLATE_PAGE_DEFAULT = 25  # Meta's page size when `limit` is not given
TEMPLATE_STATUSES = ("APPROVED", "PENDING", "REJECTED", "PAUSED", "DISABLED", "IN_APPEAL", "ARCHIVED")
TEMPLATE_CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


def find_template(name: str, language: str | None = None, catalog: list | None = None) -> dict[str, Any] | None:
    """A catalog entry by name, in `language` when given (`en` also answers `en_US`)."""
    for template in TEMPLATES if catalog is None else catalog:
        if template["name"] == name and language in (None, template["language"], template["language"] + "_US"):
            return template
    return None


def _component(template: dict[str, Any], ctype: str) -> dict[str, Any]:
    wanted = ctype.upper()
    return next((c for c in template["components"] if c["type"] == wanted), {})


def _sent_parameters(send: dict[str, Any], ctype: str, index: int | None = None) -> list[dict[str, Any]]:
    for component in send.get("components", []):
        if str(component.get("type")).lower() != ctype:
            continue
        if index is None or str(component.get("index")) == str(index):
            return component.get("parameters", [])
    return []


def _variables(text: str, named: bool) -> list[str]:
    found = VARIABLE.findall(text or "")
    return list(dict.fromkeys(found)) if named else sorted(set(found), key=lambda n: int(n) if n.isdigit() else 0)


def check_against_catalog(send: dict[str, Any], catalog: list | None = None) -> str | None:
    """Check a template send against the catalog; returns the template's category (lower case).
    Names outside the catalog are accepted (category None): Parley's demo may carry its own."""
    catalog = TEMPLATES if catalog is None else catalog
    if find_template(send["name"], catalog=catalog) is None:
        return None
    template = find_template(send["name"], send["language"]["code"], catalog)
    if template is None:
        raise GraphError(132001, f"template {send['name']!r} does not exist in that language")
    status = template.get("status", "APPROVED")
    if status == "PAUSED":
        raise GraphError(132015, f"template {send['name']!r} is paused")
    if status == "DISABLED":
        raise GraphError(132016, f"template {send['name']!r} is disabled")
    if status != "APPROVED":
        raise GraphError(132001, f"template {send['name']!r} is {status.lower()}, not approved")
    named = template.get("parameter_format") == "NAMED"
    _check_text_parameters(_component(template, "body"), _sent_parameters(send, "body"), "body", named)
    _check_header(_component(template, "header"), _sent_parameters(send, "header"), named)
    _check_buttons(_component(template, "buttons").get("buttons", []), send)
    return template["category"].lower()


def _check_text_parameters(component: dict, given: list, where: str, named: bool) -> None:
    expected = _variables(component.get("text", ""), named)
    if len(given) != len(expected):
        raise GraphError(132000, f"{where} expects {len(expected)} parameters, {len(given)} were given")
    if not named:
        return
    names = [p.get("parameter_name") for p in given if isinstance(p, dict)]
    if sorted(n for n in names if n) != sorted(expected) or len(names) != len(expected):
        raise GraphError(132012, f"{where} expects the named parameters {expected}, got {names}")


def _check_header(header: dict, given: list, named: bool) -> None:
    media = str(header.get("format", "")).lower()
    if media in ("image", "video", "document"):
        if len(given) != 1 or given[0].get("type") != media or not (given[0].get(media) or {}):
            raise GraphError(132012, f"the header expects one {media} parameter (link or id)")
        return
    _check_text_parameters(header, given, "header", named)


def _check_buttons(buttons: list[dict[str, Any]], send: dict[str, Any]) -> None:
    for index, button in enumerate(buttons):
        needs = button["type"] == "OTP" or (button["type"] == "URL" and "{{" in button.get("url", ""))
        needs = needs or button["type"] == "COPY_CODE"
        if needs and len(_sent_parameters(send, "button", index)) != 1:
            raise GraphError(132000, f"button {index} ({button['type']}) expects 1 parameter")


def template_upsert(catalog: list[dict[str, Any]], body: Any) -> dict[str, Any]:
    """Add a template to an account's catalog or replace the one of that name and language."""
    if not isinstance(body, dict) or not body.get("name") or not body.get("language"):
        raise ValueError("template needs a name and a language")
    if not isinstance(body.get("components"), list) or not _component(body, "body"):
        raise ValueError("template needs components with a BODY")
    template = {"parameter_format": "POSITIONAL", "status": "APPROVED", "category": "UTILITY", **body}
    if template["status"] not in TEMPLATE_STATUSES or template["category"] not in TEMPLATE_CATEGORIES:
        raise ValueError(f"status is one of {TEMPLATE_STATUSES}, category one of {TEMPLATE_CATEGORIES}")
    same = (template["name"], template["language"])
    existing = next((t for t in catalog if (t["name"], t["language"]) == same), None)
    template["id"] = str(template.get("id") or (existing or {}).get("id") or new_numeric_id())
    if existing is not None:
        catalog[catalog.index(existing)] = template
    else:
        catalog.append(template)
    return template


# Creating templates (`POST /{waba-id}/message_templates`) ----------------------------------------

TEMPLATE_NAME = re.compile(r"^[a-z0-9_]+$")
TEMPLATE_NAME_MAX, TEMPLATE_BODY_MAX, TEMPLATE_HEADER_MAX, TEMPLATE_FOOTER_MAX, TEMPLATE_BUTTONS_MAX = (
    512,
    1024,
    60,
    60,
    10,
)
HEADER_FORMATS = ("TEXT", "IMAGE", "VIDEO", "DOCUMENT", "LOCATION")
BUTTON_TYPES = ("QUICK_REPLY", "URL", "PHONE_NUMBER", "COPY_CODE", "OTP")
# Meta's subcode for a name and language the account already has (or is still deleting).
TEMPLATE_EXISTS = 2388024


def _invalid(title: str, words: str, subcode: int | None = None) -> GraphError:
    return GraphError(100, words, subcode=subcode, user_title=title, user_msg=words)


def template_create(catalog: list[dict[str, Any]], body: Any) -> dict[str, Any]:
    """Check a new template as Meta does before its review and add it to the account's catalog,
    PENDING; raises GraphError 100 naming the problem (`error_user_msg`) otherwise."""
    if not isinstance(body, dict):
        raise _invalid("Invalid parameter", "The request body must be a JSON object.")
    name, language = body.get("name"), body.get("language")
    if not isinstance(name, str) or not TEMPLATE_NAME.match(name) or len(name) > TEMPLATE_NAME_MAX:
        raise _invalid(
            "Invalid template name",
            f"Template names use lowercase letters, numbers and underscores only, up to {TEMPLATE_NAME_MAX} "
            "characters.",
        )
    if not isinstance(language, str) or not re.match(r"^[a-z]{2,3}(_[A-Z]{2})?$", language):
        raise _invalid("Invalid language", "language is a code such as en or en_US.")
    if body.get("category") not in TEMPLATE_CATEGORIES:
        raise _invalid("Invalid category", f"category is one of {', '.join(TEMPLATE_CATEGORIES)}.")
    named = body.get("parameter_format", "POSITIONAL") == "NAMED"
    if body.get("parameter_format", "POSITIONAL") not in ("POSITIONAL", "NAMED"):
        raise _invalid("Invalid parameter format", "parameter_format is POSITIONAL or NAMED.")
    _check_components(body.get("components"), named)
    if any(t["name"] == name and t["language"] == language for t in catalog):
        raise _invalid(
            "Message template language already exists",
            f"There is already {language} content for the template {name}. Create a new template with a "
            "different name, or delete this one first.",
            TEMPLATE_EXISTS,
        )
    template = {
        "name": name,
        "parameter_format": "NAMED" if named else "POSITIONAL",
        "components": body["components"],
        "language": language,
        "status": "PENDING",
        "category": body["category"],
        "id": new_numeric_id(),
    }
    catalog.append(template)
    return template


def _check_components(components: Any, named: bool) -> None:
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        raise _invalid("Invalid components", "components must be a list of objects.")
    kinds = [str(c.get("type", "")).upper() for c in components]
    if kinds.count("BODY") != 1 or any(kinds.count(k) > 1 for k in set(kinds)):
        raise _invalid("Invalid components", "A template has one BODY and at most one HEADER, FOOTER and BUTTONS.")
    for component, kind in zip(components, kinds, strict=True):
        if kind == "BODY":
            _check_body(component, named)
        elif kind == "HEADER":
            _check_header_definition(component, named)
        elif kind == "FOOTER":
            _check_limited(component.get("text"), "The footer", TEMPLATE_FOOTER_MAX)
            if VARIABLE.search(component["text"]):
                raise _invalid("Invalid footer", "A footer cannot have variables.")
        elif kind == "BUTTONS":
            _check_button_definitions(component.get("buttons"))
        else:
            raise _invalid("Invalid components", f"Unknown component type {kind!r}.")


def _check_limited(text: Any, what: str, limit: int) -> None:
    if not isinstance(text, str) or not text.strip() or len(text) > limit:
        raise _invalid("Invalid text", f"{what} needs a text of 1 to {limit} characters.")


def _check_body(body: dict, named: bool) -> None:
    text = body.get("text")
    _check_limited(text, "The body", TEMPLATE_BODY_MAX)
    stripped = text.strip()
    if VARIABLE.match(stripped) or stripped.endswith("}}"):
        raise _invalid(
            "Variables can't be at the start or end of the template",
            "Variable parameters can't be at the start or end of the body. Add text before the first and after "
            "the last.",
        )
    _check_examples(body, text, "body", named)


def _check_header_definition(header: dict, named: bool) -> None:
    kind = str(header.get("format", "")).upper()
    if kind not in HEADER_FORMATS:
        raise _invalid("Invalid header", f"A header's format is one of {', '.join(HEADER_FORMATS)}.")
    if kind == "TEXT":
        _check_limited(header.get("text"), "The header", TEMPLATE_HEADER_MAX)
        if len(set(VARIABLE.findall(header["text"]))) > 1:
            raise _invalid("Invalid header", "A header has at most one variable.")
        _check_examples(header, header["text"], "header", named)
    elif kind != "LOCATION" and not ((header.get("example") or {}).get("header_handle") or [None])[0]:
        raise _invalid("Missing sample media", f"A {kind.lower()} header needs a sample: example.header_handle.")


def _check_examples(component: dict, text: str, where: str, named: bool) -> None:
    found = VARIABLE.findall(text)
    if not found:
        return
    if not named and sorted({int(n) for n in found if n.isdigit()}) != list(range(1, len(set(found)) + 1)):
        raise _invalid("Invalid variables", f"The {where}'s variables are numbered {{{{1}}}}, {{{{2}}}}… in order.")
    example = component.get("example") if isinstance(component.get("example"), dict) else {}
    if named:
        given = {p.get("param_name") for p in example.get(f"{where}_text_named_params") or [] if isinstance(p, dict)}
        missing = sorted(set(found) - given)
    else:
        samples = example.get(f"{where}_text") or []
        samples = samples[0] if samples and isinstance(samples[0], list) else samples
        missing = [] if len(samples) == len(set(found)) and all(str(v).strip() for v in samples) else ["?"]
    if missing:
        raise _invalid(
            "Missing sample values",
            f"Add a sample value for every variable in the {where}: Meta reviews the template with them.",
        )


def _check_button_definitions(buttons: Any) -> None:
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= TEMPLATE_BUTTONS_MAX:
        raise _invalid("Invalid buttons", f"buttons is a list of 1 to {TEMPLATE_BUTTONS_MAX} buttons.")
    for index, button in enumerate(buttons):
        kind = str(button.get("type", "")).upper() if isinstance(button, dict) else ""
        if kind not in BUTTON_TYPES:
            raise _invalid("Invalid button", f"Button {index + 1}: type is one of {', '.join(BUTTON_TYPES)}.")
        if kind == "URL" and "{{" in str(button.get("url", "")) and not button.get("example"):
            raise _invalid("Missing sample values", f"Button {index + 1}: a URL with a variable needs an example.")


def template_delete(catalog: list[dict[str, Any]], name: Any, hsm_id: Any = None) -> int:
    """`DELETE /{waba-id}/message_templates?name=…[&hsm_id=…]`: every language of the name, or
    only the template of that id; GraphError 100 when there is none."""
    doomed = [t for t in catalog if t["name"] == name and hsm_id in (None, "", t["id"])]
    if not name or not doomed:
        raise _invalid("Message template not found", f"There is no message template {name!r} to delete.")
    catalog[:] = [t for t in catalog if t not in doomed]
    return len(doomed)


# Template webhooks (the account's `message_template_status_update` and `…_quality_update`) -----


def _template_id(template: dict[str, Any]) -> Any:
    return int(template["id"]) if str(template["id"]).isdigit() else template["id"]  # a number, as Meta's


def _account_envelope(waba_id: str, field: str, value: dict[str, Any]) -> dict[str, Any]:
    entry = {"id": waba_id, "time": int(time.time()), "changes": [{"value": value, "field": field}]}
    return {"entry": [entry], "object": "whatsapp_business_account"}


def template_status_envelope(
    waba_id: str, template: dict[str, Any], event: str, *, reason: str = "NONE", **info: dict
) -> dict[str, Any]:
    """`info`: rejection_info {reason, recommendation}, other_info {title, description}, or
    disable_info {disable_date}, as Meta adds them to some events."""
    value = {
        "event": event,
        "message_template_id": _template_id(template),
        "message_template_name": template["name"],
        "message_template_language": template["language"],
        "reason": reason,
        "message_template_category": template.get("category", "UTILITY"),
        **{key: detail for key, detail in info.items() if detail},
    }
    return _account_envelope(waba_id, "message_template_status_update", value)


def template_quality_envelope(waba_id: str, template: dict[str, Any], previous: str, new: str) -> dict[str, Any]:
    value = {
        "previous_quality_score": previous,
        "new_quality_score": new,
        "message_template_id": _template_id(template),
        "message_template_name": template["name"],
        "message_template_language": template["language"],
    }
    return _account_envelope(waba_id, "message_template_quality_update", value)


def template_page(catalog: list[dict[str, Any]], query: dict[str, str], *, url: str, max_limit: int) -> dict:
    """One page of `GET /{waba-id}/message_templates`: filters `name`, `status`, `category`,
    `language`; `fields` to choose what each entry carries; `limit` and the `after` cursor. A page
    with more after it has `paging.next`, the same request with `after` set."""
    wanted = [t for t in catalog if all(query.get(k) in (None, "", t.get(k)) for k in _FILTERS)]
    try:
        limit = max(1, min(int(query.get("limit") or TEMPLATE_PAGE_DEFAULT), max_limit))
    except ValueError as exc:
        raise GraphError(100, "limit must be a whole number") from exc
    start = _cursor_position(query["after"]) + 1 if query.get("after") else 0
    page = wanted[start : start + limit]
    fields = [f for f in (query.get("fields") or "").split(",") if f]
    result: dict[str, Any] = {"data": [_with_fields(t, fields) for t in page]}
    if not page:
        return result
    after = _cursor(start + len(page) - 1)
    result["paging"] = {"cursors": {"before": _cursor(start), "after": after}}
    if start + len(page) < len(wanted):
        result["paging"]["next"] = f"{url}?{urlencode({**query, 'limit': limit, 'after': after})}"
    if start > 0:
        result["paging"]["previous"] = f"{url}?{urlencode({**query, 'limit': limit, 'before': _cursor(start)})}"
    return result


_FILTERS = ("name", "status", "category", "language")


def _with_fields(template: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    full = {**template, "rejected_reason": template.get("rejected_reason", "NONE")}
    return {k: v for k, v in full.items() if k in fields or k == "id"} if fields else full


def _cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"template:{position}".encode()).decode()


def _cursor_position(cursor: str) -> int:
    try:
        kind, _, position = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind == "template":
            return int(position)
    except (ValueError, UnicodeDecodeError):
        pass
    raise GraphError(100, "Invalid pagination cursor")


# How an outbound message looks on the customer's phone (for the page) ----------------------------


def preview(send: dict[str, Any], catalog: list | None = None) -> dict[str, Any]:
    """Render a send payload as text plus tappable replies:
    {"text", "header"?, "footer"?, "media"?, "menu"?, "replies": [{"type", "id"|"payload", ...}]}."""
    kind = send.get("type", "text")
    content = send.get(kind)
    if kind == "text":
        return {"text": content["body"], "replies": []}
    if kind in MEDIA_TYPES:
        media = {"type": kind, "id": content.get("id"), "link": content.get("link")}
        text = content.get("caption") or content.get("filename") or ""
        return {"text": text, "media": media, "replies": []}
    if kind == "interactive":
        return _preview_interactive(content)
    if kind == "template":
        return _preview_template(content, catalog)
    return {"text": _preview_other(kind, content), "replies": []}


def _preview_interactive(interactive: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {"text": (interactive.get("body") or {}).get("text", ""), "replies": []}
    if (interactive.get("header") or {}).get("type") == "text":
        shown["header"] = interactive["header"]["text"]
    if (interactive.get("footer") or {}).get("text"):
        shown["footer"] = interactive["footer"]["text"]
    action = interactive.get("action", {})
    if interactive.get("type") == "button":
        shown["replies"] = [
            {"type": "button_reply", "id": b["reply"]["id"], "title": b["reply"]["title"]}
            for b in action.get("buttons", [])
        ]
    elif interactive.get("type") == "list":
        shown["menu"] = action.get("button")
        shown["replies"] = [
            {
                "type": "list_reply",
                "id": row["id"],
                "title": row["title"],
                "description": row.get("description", ""),
                "section": section.get("title", ""),
            }
            for section in action.get("sections", [])
            for row in section.get("rows", [])
        ]
    elif interactive.get("type") == "cta_url":
        parameters = action.get("parameters", {})
        shown["link"] = {"title": parameters.get("display_text"), "url": parameters.get("url")}
    return shown


def _preview_template(send: dict[str, Any], catalog: list | None = None) -> dict[str, Any]:
    template = find_template(send["name"], (send.get("language") or {}).get("code"), catalog)
    body = _sent_parameters(send, "body")
    if template is None:
        return {"text": f"[template {send['name']}] " + " | ".join(map(_parameter_text, body)), "replies": []}
    text = _fill(_component(template, "body").get("text", ""), body)
    shown: dict[str, Any] = {"text": text, "replies": _quick_replies(template, send)}
    header = _component(template, "header")
    if header.get("format") == "TEXT":
        shown["header"] = _fill(header.get("text", ""), _sent_parameters(send, "header"))
    if _component(template, "footer"):
        shown["footer"] = _component(template, "footer")["text"]
    return shown


def _fill(text: str, parameters: list[dict[str, Any]]) -> str:
    """A template text with the sent values: by `parameter_name`, else by position."""
    by_name = {p.get("parameter_name"): _parameter_text(p) for p in parameters if p.get("parameter_name")}
    by_number = [_parameter_text(p) for p in parameters]

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in by_name:
            return by_name[name]
        index = int(name) - 1 if name.isdigit() else len(by_number)
        return by_number[index] if index < len(by_number) else match.group(0)

    return VARIABLE.sub(one, text)


def _quick_replies(template: dict[str, Any], send: dict[str, Any]) -> list[dict[str, Any]]:
    payloads = {
        int(c.get("index", -1)): c.get("parameters", [{}])[0].get("payload")
        for c in send.get("components", [])
        if str(c.get("type")).lower() == "button" and c.get("sub_type") == "quick_reply"
    }
    buttons = _component(template, "buttons").get("buttons", [])
    return [
        {"type": "button", "payload": payloads.get(index) or b["text"], "title": b["text"]}
        for index, b in enumerate(buttons)
        if b["type"] == "QUICK_REPLY"
    ]


def _parameter_text(parameter: dict[str, Any]) -> str:
    ptype = parameter.get("type", "text")
    if ptype == "text":
        return str(parameter.get("text", ""))
    if ptype == "currency":
        return str(parameter.get("currency", {}).get("fallback_value", ""))
    if ptype == "date_time":
        return str(parameter.get("date_time", {}).get("fallback_value", ""))
    return f"[{ptype}]"


def _preview_other(kind: str, content: Any) -> str:
    if kind == "location":
        place = " ".join(str(content.get(k, "")) for k in ("name", "address")).strip()
        return f"📍 {place} ({content['latitude']}, {content['longitude']})".replace("  ", " ")
    if kind == "reaction":
        return f"reacted {content.get('emoji') or '(removed)'}"
    if kind == "contacts":
        return "👤 " + ", ".join(c["name"]["formatted_name"] for c in content)
    return f"[{kind}]"


def inbound_preview(message: dict[str, Any]) -> dict[str, Any]:
    """How the customer's own message shows in the page's thread."""
    kind = message["type"]
    content = message.get(kind) or {}
    if kind == "text":
        return {"text": content["body"]}
    if kind in MEDIA_TYPES:
        text = content.get("caption") or content.get("filename") or ""
        return {"text": text, "media": {"type": kind, "id": content["id"], "link": None}}
    if kind == "interactive":
        return {"text": content[content["type"]]["title"]}
    if kind == "button":
        return {"text": content["text"]}
    if kind in ("location", "reaction"):
        return {"text": _preview_other(kind, content)}
    return {"text": f"[{kind}]"}
