"""WhatsApp Cloud API (Graph API): webhooks in, /{phone-number-id}/messages out.

Credentials: access_token, app_secret, phone_number_id, waba_id.
Settings: base_url (default https://graph.facebook.com), api_version (default v21.0).
"""

import json
import re
from dataclasses import replace

import httpx

from apps.connectors.base import (
    HTTP_TIMEOUT,
    Connector,
    ErrorClass,
    InboundMessage,
    MediaFile,
    OutboundMessage,
    ParseError,
    ProviderError,
    SendResult,
    StatusUpdate,
    TemplateStatusUpdate,
    json_body,
    moment,
    network_error,
    read_capped,
)
from apps.connectors.meta import MetaWebhooks
from apps.connectors.session import http
from apps.core import netguard
from apps.core.exceptions import DomainError

MB = 1024 * 1024
VARIABLE_SUFFIX = re.compile(r"\{\{\s*[A-Za-z0-9_]+\s*\}\}")
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")

# Error codes from Meta's documentation, by what Parley should do about them (CHANNELS.md).
ERROR_CLASSES = {
    **dict.fromkeys(("130429", "131056", "4", "80007", "131000", "131016", "2"), ErrorClass.RETRY),
    "131047": ErrorClass.NEEDS_TEMPLATE,
    **dict.fromkeys(("131026", "131049", "131050", "131051"), ErrorClass.STOP_RECIPIENT),
    **dict.fromkeys(
        ("132000", "132001", "132005", "132007", "132012", "132015", "132016"),
        ErrorClass.FIX_TEMPLATE,
    ),
    **dict.fromkeys(("190", "10", "200", "131005", "131031"), ErrorClass.CREDENTIALS),
}


# Templates: Meta's list (GET /{waba-id}/message_templates) in Parley's terms. A status Meta adds
# later, like DISABLED or ARCHIVED, cannot be sent, so it reads as paused; an unknown category as
# marketing, the one with the strictest consent rules.
TEMPLATE_STATUSES = {
    "APPROVED": "approved",
    "PENDING": "pending",
    "IN_APPEAL": "pending",
    "REJECTED": "rejected",
    "PAUSED": "paused",
}
TEMPLATE_CATEGORIES = {"MARKETING": "marketing", "UTILITY": "utility", "AUTHENTICATION": "authentication"}
TEMPLATE_FIELDS = "id,name,language,status,category,parameter_format,components,rejected_reason"
TEMPLATE_PAGE_SIZE = 100
TEMPLATE_MAX_PAGES = 200  # 20,000 templates: far above Meta's per-account limit, a guard against a paging loop
HEADER_FORMATS = ("text", "image", "video", "document")

# The webhook fields that speak of templates, not conversations.
TEMPLATE_STATUS_FIELD = "message_template_status_update"
TEMPLATE_QUALITY_FIELD = "message_template_quality_update"
# message_template_status_update's `event` in Parley's statuses (Meta's webhook reference). DISABLED,
# ARCHIVED and a deletion cannot be sent, so they read as paused, with what happened as the reason;
# FLAGGED (at risk of being disabled, still sendable), LOCKED and LIMIT_EXCEEDED leave it as it is.
TEMPLATE_EVENTS = {
    "APPROVED": "approved",
    "REINSTATED": "approved",
    "UNARCHIVED": "approved",
    "PENDING": "pending",
    "IN_APPEAL": "pending",
    "REJECTED": "rejected",
    "PAUSED": "paused",
    "DISABLED": "paused",
    "ARCHIVED": "paused",
    "DELETED": "paused",
    "PENDING_DELETION": "paused",
}
TEMPLATE_EVENT_WORDS = {
    "DISABLED": "Disabled by Meta after repeated pauses (low quality): it cannot be sent again.",
    "ARCHIVED": "Archived at Meta (unused for a long time); unarchive it in WhatsApp Manager to send it.",
    "DELETED": "Deleted at Meta.",
    "PENDING_DELETION": "Deleted at Meta.",
}
QUALITY_SCORES = ("GREEN", "YELLOW", "RED", "UNKNOWN")
# Meta's answer to a template it already has in that language (or is still deleting): code 100,
# this subcode.
TEMPLATE_EXISTS_SUBCODE = 2388024


def classify(code: str, http_status: int | None = None) -> ErrorClass:
    if code in ERROR_CLASSES:
        return ERROR_CLASSES[code]
    if http_status is not None and (http_status >= 500 or http_status == 429):
        return ErrorClass.RETRY
    return ErrorClass.FATAL


class WhatsAppConnector(MetaWebhooks, Connector):
    kind = "whatsapp"
    reply_window_hours = 24
    templates = True
    rate_limit_codes = frozenset({"130429", "131056", "429"})  # throughput, pair rate limit
    size_limits = {
        "image": 5 * MB,
        "video": 16 * MB,
        "audio": 16 * MB,
        "sticker": 500 * 1024,
        "document": 100 * MB,
    }

    def address_of(self, contact) -> str:
        return contact.phone.lstrip("+") if contact.phone else ""  # the wa_id is the number

    # Requests: the handshake and signature are Meta's (apps/connectors/meta.py) ----------

    # Parsing ------------------------------------------------------------------------------

    def parse(self, channel, raw_body: bytes, headers=None) -> list:
        envelope = json_body(raw_body)
        if not isinstance(envelope, dict) or envelope.get("object") != "whatsapp_business_account":
            raise ParseError("not a whatsapp_business_account webhook")
        events = []
        for entry in envelope.get("entry") or []:
            for change in entry.get("changes") or []:
                field = change.get("field")
                if field == "messages":
                    events.extend(self._parse_value(change.get("value") or {}))
                elif field in (TEMPLATE_STATUS_FIELD, TEMPLATE_QUALITY_FIELD):
                    events.append(self._parse_template(entry, field, change.get("value") or {}))
                # account updates, phone number quality, etc. are neither conversations nor templates
        return events

    def _parse_template(self, entry: dict, field: str, value: dict) -> TemplateStatusUpdate:
        common = {
            "account_id": str(entry.get("id", "")),
            "template_id": str(value.get("message_template_id") or ""),
            "name": value.get("message_template_name", ""),
            "language": value.get("message_template_language", ""),
            "timestamp": moment(entry.get("time")),
        }
        if field == TEMPLATE_QUALITY_FIELD:
            score = str(value.get("new_quality_score", "")).upper()
            return TemplateStatusUpdate(quality=score.lower() if score in QUALITY_SCORES else "", **common)
        event = str(value.get("event", "")).upper()
        flagged = True if event == "FLAGGED" else False if event in ("REINSTATED", "APPROVED") else None
        return TemplateStatusUpdate(
            status=TEMPLATE_EVENTS.get(event, ""),
            event=event,
            reason=_template_event_reason(event, value)[:300],
            flagged=flagged,
            **common,
        )

    def _parse_value(self, value: dict) -> list:
        names = {c.get("wa_id"): (c.get("profile") or {}).get("name", "") for c in value.get("contacts") or []}
        events = [self._parse_message(m, names) for m in value.get("messages") or []]
        events += [self._parse_status(s) for s in value.get("statuses") or []]
        return events

    def _parse_message(self, message: dict, names: dict) -> InboundMessage:
        try:
            sender, provider_id, kind = (
                message["from"],
                message["id"],
                message.get("type", "unsupported"),
            )
        except (KeyError, TypeError) as error:
            raise ParseError(f"message without {error}") from error
        common = {
            "provider_id": provider_id,
            "sender_id": sender,
            "sender_name": names.get(sender, ""),
            "sender_phone": f"+{sender}",
            "timestamp": moment(message.get("timestamp")),
            "reply_to_provider_id": (message.get("context") or {}).get("id", ""),
        }
        referral = {"referral": message["referral"]} if message.get("referral") else {}
        body = message.get(kind) if isinstance(message.get(kind), dict) else {}
        if kind == "text":
            return InboundMessage(kind="text", text=body.get("body", ""), payload=referral, **common)
        if kind in MEDIA_TYPES:
            media = {key: body.get(key, "") for key in ("id", "mime_type", "sha256", "filename", "caption")}
            media["type"] = kind
            return InboundMessage(kind="media", text=body.get("caption", ""), media=media, payload=referral, **common)
        if kind == "interactive":
            reply = body.get("button_reply") or body.get("list_reply") or body.get("nfm_reply") or {}
            payload = {
                "reply_id": reply.get("id", ""),
                "title": reply.get("title", ""),
                "type": body.get("type", ""),
            }
            return InboundMessage(kind="interactive", text=reply.get("title", ""), payload=payload, **common)
        if kind == "button":
            payload = {
                "reply_id": body.get("payload", ""),
                "title": body.get("text", ""),
                "type": "button",
            }
            return InboundMessage(kind="interactive", text=body.get("text", ""), payload=payload, **common)
        if kind == "location":
            return InboundMessage(
                kind="location",
                text=body.get("name", "") or body.get("address", ""),
                payload=body,
                **common,
            )
        if kind == "reaction":
            payload = {"emoji": body.get("emoji", ""), "message_id": body.get("message_id", "")}
            return InboundMessage(kind="reaction", text=payload["emoji"], payload=payload, **common)
        if kind == "contacts":
            return InboundMessage(kind="contacts", payload={"contacts": message.get("contacts", [])}, **common)
        # order, system, unsupported and anything Meta adds later: kept whole, never a crash.
        return InboundMessage(kind="unsupported", payload={"type": kind, "raw": message}, **common)

    def _parse_status(self, status: dict) -> StatusUpdate:
        try:
            provider_id, state = status["id"], status["status"]
        except (KeyError, TypeError) as error:
            raise ParseError(f"status without {error}") from error
        errors = status.get("errors") or [{}]
        first = errors[0] if isinstance(errors[0], dict) else {}
        details = (first.get("error_data") or {}).get("details", "")
        return StatusUpdate(
            provider_id=provider_id,
            state=state,
            timestamp=moment(status.get("timestamp")),
            recipient_id=status.get("recipient_id", ""),
            error_code=str(first.get("code", "")) if first else "",
            error_reason=" — ".join(
                part for part in (first.get("title", ""), details or first.get("message", "")) if part
            ),
            opaque=status.get("biz_opaque_callback_data", ""),
        )

    # Sending ------------------------------------------------------------------------------

    def _url(self, channel, path: str) -> str:
        base = channel.settings.get("base_url", "https://graph.facebook.com").rstrip("/")
        version = channel.settings.get("api_version", "v21.0")
        return f"{base}/{version}/{path.lstrip('/')}"

    def _headers(self, channel) -> dict:
        return {"Authorization": f"Bearer {channel.credentials.get('access_token', '')}"}

    def body_for(self, message: OutboundMessage) -> dict:
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.recipient_id,
        }
        if message.reply_to_provider_id:
            body["context"] = {"message_id": message.reply_to_provider_id}
        if message.opaque:
            body["biz_opaque_callback_data"] = message.opaque
        if message.kind == "text":
            body.update(type="text", text={"body": message.text, "preview_url": True})
        elif message.kind == "media":
            body.update(self._media_body(message))
        elif message.kind == "interactive":
            body.update(type="interactive", interactive=self._interactive(message))
        elif message.kind == "template":
            body.update(type="template", template=message.payload["template"])
        elif message.kind == "location":
            body.update(type="location", location=message.payload)
        elif message.kind == "reaction":
            body.update(type="reaction", reaction=message.payload)
        else:
            raise ProviderError(ErrorClass.FATAL, "unsupported_kind", f"WhatsApp cannot send {message.kind}")
        return body

    def _media_body(self, message: OutboundMessage) -> dict:
        media = message.media or {}
        family = (media.get("mime_type") or "").split("/")[0]
        media_type = family if family in ("image", "video", "audio") else "document"
        ref = {"id": media["provider_media_id"]} if media.get("provider_media_id") else {"link": media.get("url", "")}
        if message.text and media_type != "audio":
            ref["caption"] = message.text
        if media_type == "document" and media.get("filename"):
            ref["filename"] = media["filename"]
        return {"type": media_type, media_type: ref}

    def _interactive(self, message: OutboundMessage) -> dict:
        """Options become reply buttons (up to 3, titles ≤ 20) or a list (up to 10 rows)."""
        options = message.payload.get("options", [])
        body = {"text": message.text[:1024] or "…"}
        if len(options) <= 3:
            buttons = [{"type": "reply", "reply": {"id": o["id"][:256], "title": o["title"][:20]}} for o in options]
            return {"type": "button", "body": body, "action": {"buttons": buttons}}
        rows = [
            {
                "id": o["id"][:200],
                "title": o["title"][:24],
                **({"description": o["description"][:72]} if o.get("description") else {}),
            }
            for o in options[:10]
        ]
        button = (message.payload.get("button") or "Choose")[:20]
        return {
            "type": "list",
            "body": body,
            "action": {"button": button, "sections": [{"title": button[:24], "rows": rows}]},
        }

    def send(self, channel, message: OutboundMessage) -> SendResult:
        if message.kind == "media" and (message.media or {}).get("content") is not None:
            message = self._with_uploaded_media(channel, message)
        if message.kind == "template" and message.payload.get("template_id"):
            message = self._with_current_template(channel, message)
        url, headers, body = self.send_request(channel, message)
        try:
            response = http().post(url, content=body, headers=headers, timeout=HTTP_TIMEOUT)
        except httpx.HTTPError as error:
            raise network_error(error) from error
        return self.send_result(response.status_code, response.content, response.headers)

    def send_request(self, channel, message: OutboundMessage) -> tuple[str, dict, bytes]:
        """The POST that sends `message` as it stands (its media already uploaded, a template's
        payload already built): URL, headers and JSON body, for a caller with its own HTTP
        connections (the broadcast sender)."""
        url = self._url(channel, f"{channel.credentials.get('phone_number_id', '')}/messages")
        headers = {**self._headers(channel), "Content-Type": "application/json"}
        return url, headers, json.dumps(self.body_for(message), separators=(",", ":")).encode()

    def send_result(self, status: int, content: bytes, headers=None) -> SendResult:
        """The answer to `send_request`'s POST: the message's id, or ProviderError classified."""
        if 200 <= status < 300:
            try:
                return SendResult(provider_id=json.loads(content)["messages"][0]["id"])
            except (ValueError, KeyError, IndexError, TypeError) as error:
                raise ProviderError(
                    ErrorClass.RETRY, "bad_response", f"unexpected answer: {content!r:.200}"
                ) from error
        self._answer(httpx.Response(status, headers=headers or {}, content=content))
        raise ProviderError(classify("", status), str(status), "unexpected answer")  # _answer raised already

    def _with_uploaded_media(self, channel, message: OutboundMessage) -> OutboundMessage:
        media = dict(message.media)
        content = media.pop("content")
        files = {
            "file": (
                media.get("filename") or "file",
                content,
                media.get("mime_type") or "application/octet-stream",
            )
        }
        path = f"{channel.credentials.get('phone_number_id', '')}/media"
        data = self._post(
            channel,
            path,
            data={"messaging_product": "whatsapp", "type": media.get("mime_type", "")},
            files=files,
        )
        media["provider_media_id"] = data.get("id", "")
        return OutboundMessage(**{**message.__dict__, "media": media})

    def _with_current_template(self, channel, message: OutboundMessage) -> OutboundMessage:
        """A template chosen by id goes out in the shape it has now, header, body and button
        parameters built here where Meta's format lives; one deleted since keeps the payload
        it was queued with."""
        from apps.connectors.models import MessageTemplate

        template = MessageTemplate.objects.filter(pk=message.payload["template_id"], channel_id=channel.pk).first()
        if template is None:
            return message
        built = self.template_payload(template, message.payload.get("parameters") or [])
        return replace(message, payload={**message.payload, "template": built})

    # Templates ----------------------------------------------------------------------------

    def template_payload(self, template, parameters) -> dict:
        """Meta's `template` object: the header's, body's and buttons' parameters, each named
        (`parameter_name`) when the template's variables are."""
        values = template.values(parameters)
        components = [
            c for c in (self._header_component(template, values), self._body_component(template, values)) if c
        ]
        components += self._button_components(template, values)
        return {"name": template.name, "language": {"code": template.language}, "components": components}

    def _text_parameter(self, template, component: str, name: str, values: dict) -> dict:
        parameter = {"type": "text", "text": values.get(template.slot_of(component, name), "")}
        if template.named:
            parameter["parameter_name"] = name
        return parameter

    def _header_component(self, template, values: dict) -> dict | None:
        if template.header_format in ("image", "video", "document"):
            kind = template.header_format
            return {"type": "header", "parameters": [{"type": kind, kind: {"link": template.header}}]}
        names = template.names_in(template.header_text)
        if not names:
            return None
        return {"type": "header", "parameters": [self._text_parameter(template, "header", names[0], values)]}

    def _body_component(self, template, values: dict) -> dict | None:
        names = template.names_in(template.body)
        if not names:
            return None
        return {"type": "body", "parameters": [self._text_parameter(template, "body", n, values) for n in names]}

    def _button_components(self, template, values: dict) -> list[dict]:
        """A URL button's `{{1}}` suffix, a coupon code, and an authentication template's code
        (its one-tap / copy-code button repeats the body's {{1}}, as Meta requires)."""
        components = []
        for index, button in enumerate(template.buttons or []):
            value = values.get(f"button.{index}", "")
            if button.get("type") == "url" and "{{" in button.get("url", ""):
                parameter, sub_type = {"type": "text", "text": value}, "url"
            elif button.get("type") == "copy_code":
                parameter, sub_type = {"type": "coupon_code", "coupon_code": value}, "copy_code"
            elif button.get("type") == "otp":
                code = values.get(template.slot_of("body", (template.names_in(template.body) or ["1"])[0]), "")
                parameter, sub_type = {"type": "text", "text": code}, "url"
            else:
                continue  # quick replies answer with their own text; phone buttons never vary
            components.append({"type": "button", "sub_type": sub_type, "index": str(index), "parameters": [parameter]})
        return components

    def templates_fetch(self, channel) -> list[dict]:
        """Every page of `GET /{waba-id}/message_templates`. Pages are asked for with the `after`
        cursor on our own URL rather than by following `paging.next`, so the token only ever
        goes to the channel's base_url."""
        waba_id = self._waba_id(channel)
        params = {"fields": TEMPLATE_FIELDS, "limit": TEMPLATE_PAGE_SIZE}
        templates: list[dict] = []
        for _page in range(TEMPLATE_MAX_PAGES):
            data = self._get(channel, f"{waba_id}/message_templates", params=params)
            templates += [t for t in map(template_from_graph, data.get("data") or []) if t]
            paging = data.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not paging.get("next") or not after:
                break
            params = {**params, "after": after}
        return templates

    def _waba_id(self, channel) -> str:
        waba_id = channel.credentials.get("waba_id", "")
        if not waba_id:
            raise DomainError(
                "This WhatsApp channel has no waba_id in its credentials: templates belong to the business account.",
                code="waba_id_missing",
            )
        return waba_id

    def template_submit(self, channel, template) -> dict:
        """`POST /{waba-id}/message_templates` with the draft in Meta's shape: {"provider_id",
        "status", "category"} as Meta answers (PENDING while it reviews; it may re-categorise).
        A template Meta refuses is a DomainError with its words; a network, token or
        rate problem is a ProviderError."""
        waba_id = self._waba_id(channel)
        data = self._template_call(
            channel, "POST", f"{waba_id}/message_templates", json=template_definition(template), template=template
        )
        return {
            "provider_id": str(data.get("id", "")),
            "status": TEMPLATE_STATUSES.get(str(data.get("status", "")).upper(), "pending"),
            "category": TEMPLATE_CATEGORIES.get(str(data.get("category", "")).upper(), template.category),
        }

    def template_delete(self, channel, template) -> None:
        """`DELETE /{waba-id}/message_templates?name=…`, with `hsm_id` when the template's id is
        known so that only this language goes (by name alone Meta deletes every language)."""
        params = {"name": template.name}
        if template.provider_id:
            params["hsm_id"] = template.provider_id
        self._template_call(
            channel, "DELETE", f"{self._waba_id(channel)}/message_templates", params=params, template=template
        )

    def _template_call(self, channel, method: str, path: str, *, template, **kwargs) -> dict:
        try:
            response = http().request(
                method, self._url(channel, path), headers=self._headers(channel), timeout=HTTP_TIMEOUT, **kwargs
            )
        except httpx.HTTPError as error:
            raise network_error(error) from error
        error = _graph_error(response)
        if error is None:
            return self._answer(response)
        code, subcode = str(error.get("code", "")), error.get("error_subcode")
        if classify(code, response.status_code) != ErrorClass.FATAL:
            self._answer(response)  # retry, credentials: a ProviderError like any other call's
        raise _template_refusal(template, code, subcode, error)

    def _get(self, channel, path: str, **kwargs) -> dict:
        try:
            response = http().get(
                self._url(channel, path), headers=self._headers(channel), timeout=HTTP_TIMEOUT, **kwargs
            )
        except httpx.HTTPError as error:
            raise network_error(error) from error
        return self._answer(response)

    def _post(self, channel, path: str, **kwargs) -> dict:
        try:
            response = http().post(
                self._url(channel, path),
                headers=self._headers(channel),
                timeout=HTTP_TIMEOUT,
                **kwargs,
            )
        except httpx.HTTPError as error:
            raise network_error(error) from error
        return self._answer(response)

    def _answer(self, response: httpx.Response) -> dict:
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.is_success and isinstance(data, dict):
            return data
        error = data.get("error") if isinstance(data, dict) else None
        error = error if isinstance(error, dict) else {}
        code = str(error.get("code", response.status_code))
        detail = (error.get("error_data") or {}).get("details") or error.get("message") or response.reason_phrase
        retry_after = (
            float(response.headers["Retry-After"]) if response.headers.get("Retry-After", "").isdigit() else None
        )
        raise ProviderError(classify(code, response.status_code), code, str(detail), retry_after=retry_after)

    # Media --------------------------------------------------------------------------------

    def fetch_media(self, channel, media: dict, max_bytes: int) -> MediaFile:
        """GET /{media-id} gives a short-lived URL; the file itself needs the same token."""
        try:
            meta = http().get(
                self._url(channel, media["id"]),
                headers=self._headers(channel),
                timeout=HTTP_TIMEOUT,
            )
            info = self._answer(meta)
            if int(info.get("file_size") or 0) > max_bytes:
                raise ProviderError(ErrorClass.FATAL, "too_large", f"{info['file_size']} bytes")
            # The URL comes from an answer: guarded like any URL Parley is handed.
            with netguard.stream("GET", info["url"], headers=self._headers(channel), timeout=HTTP_TIMEOUT) as stream:
                if not stream.is_success:
                    raise ProviderError(
                        classify("", stream.status_code),
                        str(stream.status_code),
                        "media download failed",
                    )
                content = read_capped(stream, max_bytes)
        except netguard.OutboundBlocked as error:
            raise ProviderError(ErrorClass.FATAL, "private_url", str(error)) from error
        except httpx.HTTPError as error:
            raise network_error(error) from error
        mime = info.get("mime_type") or media.get("mime_type") or "application/octet-stream"
        return MediaFile(content=content, mime_type=mime, filename=media.get("filename") or "")


# Meta's template objects ----------------------------------------------------------------------


def template_definition(template) -> dict:
    """A draft in the shape `POST /{waba-id}/message_templates` takes: each part with its text
    and an example of every variable (Meta reviews with them)."""
    values = template.values(template.example)
    components = [
        c
        for c in (
            _header_definition(template, values),
            _body_definition(template, values),
            _footer_definition(template),
        )
        if c
    ]
    if template.buttons:
        components.append(
            {"type": "BUTTONS", "buttons": [_button_definition(i, b, values) for i, b in enumerate(template.buttons)]}
        )
    return {
        "name": template.name,
        "language": template.language,
        "category": template.category.upper(),
        "parameter_format": template.parameter_format.upper(),
        "components": components,
    }


def _text_examples(template, component: str, text: str, values: dict) -> dict:
    names = template.names_in(text)
    if not names:
        return {}
    key = f"{component}_text"
    if template.named:
        named = [{"param_name": n, "example": values.get(template.slot_of(component, n), "")} for n in names]
        return {"example": {f"{key}_named_params": named}}
    samples = [values.get(template.slot_of(component, n), "") for n in names]
    return {"example": {key: samples if component == "header" else [samples]}}  # the body's: a list of one list


def _header_definition(template, values: dict) -> dict | None:
    if not template.header_format:
        return None
    if template.header_format == "text":
        header = {"type": "HEADER", "format": "TEXT", "text": template.header}
        return {**header, **_text_examples(template, "header", template.header, values)}
    # Meta wants a handle from its Resumable Upload API here; the file's URL stands in for it.
    return {
        "type": "HEADER",
        "format": template.header_format.upper(),
        "example": {"header_handle": [template.header]},
    }


def _body_definition(template, values: dict) -> dict:
    return {"type": "BODY", "text": template.body, **_text_examples(template, "body", template.body, values)}


def _footer_definition(template) -> dict | None:
    return {"type": "FOOTER", "text": template.footer} if template.footer else None


def _button_definition(index: int, button: dict, values: dict) -> dict:
    kind = str(button.get("type", "")).upper()
    sample = values.get(f"button.{index}", "")
    if kind == "COPY_CODE":
        return {"type": kind, "example": sample}
    defined = {"type": kind, "text": button.get("text", "")}
    if kind == "URL":
        defined["url"] = button.get("url", "")
        if "{{" in defined["url"]:
            defined["example"] = [VARIABLE_SUFFIX.sub(sample, defined["url"])]
    elif kind == "PHONE_NUMBER":
        defined["phone_number"] = button.get("phone_number", "")
    elif kind == "OTP":
        defined["otp_type"] = str(button.get("otp_type") or "COPY_CODE").upper()
    return defined


def _graph_error(response: httpx.Response) -> dict | None:
    """The `error` object of a Graph answer that is one (4xx, 5xx), else None."""
    if response.is_success:
        return None
    try:
        data = response.json()
    except ValueError:
        data = {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {"code": response.status_code}


def _template_refusal(template, code: str, subcode, error: dict) -> DomainError:
    """Meta's refusal of a template in words a supervisor can act on: its `error_user_msg` (what
    WhatsApp Manager would show), else the error's details."""
    words = error.get("error_user_msg") or (error.get("error_data") or {}).get("details") or error.get("message")
    title = error.get("error_user_title") or ""
    said = f"{title}: {words}" if title and words else str(words or title or f"error {code}")
    if str(subcode) == str(TEMPLATE_EXISTS_SUBCODE):
        return DomainError(
            f"Meta already has a template {template.name} in {template.language} (or is still deleting one): "
            f"choose another name. Meta said: {said}",
            code="template_name_taken",
            fields={"name": [f"Meta already has {template.name} in {template.language}; choose another name."]},
        )
    return DomainError(f"Meta refused the template: {said} (code {code})", code="template_refused")


def _template_event_reason(event: str, value: dict) -> str:
    """What a supervisor reads about a status event: a rejection's reason and Meta's advice, a
    pause's kind and description, or what a disable, archive or deletion means."""
    reason = str(value.get("reason") or "")
    reason = "" if reason.upper() == "NONE" else reason
    if event == "REJECTED":
        info = value.get("rejection_info") if isinstance(value.get("rejection_info"), dict) else {}
        advice = " ".join(str(info.get(k) or "") for k in ("reason", "recommendation")).strip()
        return f"{reason}: {advice}" if reason and advice else reason or advice or "Rejected by Meta."
    if event == "PAUSED":
        other = value.get("other_info") if isinstance(value.get("other_info"), dict) else {}
        kind, description = str(other.get("title") or ""), str(other.get("description") or "")
        said = f"{kind}: {description}" if kind and description else kind or description
        return f"Paused by Meta (low quality){f' — {said}' if said else ''}."
    return TEMPLATE_EVENT_WORDS.get(event, reason)


def template_from_graph(item) -> dict | None:
    """One template of Meta's list as `Connector.templates_fetch` documents it; None for an
    entry without a name or language (nothing to key it by)."""
    if not isinstance(item, dict) or not item.get("name") or not item.get("language"):
        return None
    parts = {str(c.get("type", "")).upper(): c for c in item.get("components") or [] if isinstance(c, dict)}
    header, body, footer = parts.get("HEADER", {}), parts.get("BODY", {}), parts.get("FOOTER", {})
    named = str(item.get("parameter_format", "")).upper() == "NAMED"
    header_format = str(header.get("format") or ("TEXT" if header.get("text") else "")).lower()
    header_format = header_format if header_format in HEADER_FORMATS else ""
    handles = (header.get("example") or {}).get("header_handle") or [""]
    raw_buttons = [b for b in (parts.get("BUTTONS") or {}).get("buttons") or [] if isinstance(b, dict)]
    reason = str(item.get("rejected_reason") or "")
    return {
        "provider_id": str(item.get("id", "")),
        "name": str(item["name"]),
        "language": str(item["language"]),
        "category": TEMPLATE_CATEGORIES.get(str(item.get("category", "")).upper(), "marketing"),
        "status": TEMPLATE_STATUSES.get(str(item.get("status", "")).upper(), "paused"),
        "rejected_reason": "" if reason.upper() == "NONE" else reason[:300],
        "parameter_format": "named" if named else "positional",
        "header_format": header_format,
        "header": header.get("text", "") if header_format == "text" else str(handles[0]),
        "body": str(body.get("text", "")),
        "footer": str(footer.get("text", "")),
        "buttons": [_button_from_graph(b) for b in raw_buttons],
        "examples": {
            "header": _examples(header.get("example"), "header_text", named),
            "body": _examples(body.get("example"), "body_text", named),
            "buttons": {i: v for i, b in enumerate(raw_buttons) if (v := _button_example(b))},
        },
    }


def _button_from_graph(button: dict) -> dict:
    kind = str(button.get("type", "")).lower()
    shown = {"type": kind, "text": str(button.get("text") or ("Copy offer code" if kind == "copy_code" else ""))}
    for key in ("url", "phone_number", "otp_type"):
        if button.get(key):
            shown[key] = str(button[key])
    return shown


def _examples(example, key: str, named: bool) -> dict:
    """{variable name: sample} from a component's `example`: `header_text: ["v"]` and
    `body_text: [["a", "b"]]` when positional, `<key>_named_params: [{param_name, example}]`."""
    example = example if isinstance(example, dict) else {}
    if named:
        pairs = example.get(f"{key}_named_params") or []
        return {str(p.get("param_name")): str(p.get("example", "")) for p in pairs if isinstance(p, dict)}
    values = example.get(key) or []
    if values and isinstance(values[0], list):  # body_text is a list of one list
        values = values[0]
    return {str(number): str(value) for number, value in enumerate(values, start=1)}


def _button_example(button: dict) -> str:
    """A URL button's sample is the whole address; a send gives only what replaces {{1}}."""
    kind = str(button.get("type", "")).upper()
    if kind == "COPY_CODE":
        sample = button.get("example")
        return str(sample[0] if isinstance(sample, list) and sample else sample or "")
    if kind != "URL" or "{{" not in str(button.get("url", "")):
        return ""
    samples = button.get("example") or [""]
    full, prefix = str(samples[0]), str(button["url"]).split("{{", 1)[0]
    return full.removeprefix(prefix)
