"""The simulated WhatsApp Cloud API: the Graph endpoints Parley's connector calls, the signed
webhooks Meta would send back, and the control verbs tests and the demo page use to play the
customer. Wire formats live in whatsapp_payloads.py; this module holds state and behaviour.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from email import policy as email_policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import urlencode

from .core import (
    ControlError,
    Delivery,
    DeliveryPolicy,
    Provider,
    Request,
    Response,
    Route,
    assert_loopback,
    deliver,
    http_call,
    in_background,
    json_response,
    post_repeatedly,
    route,
)
from .samples import sample_for
from .whatsapp_payloads import (
    MEDIA_TYPES,
    STATUS_ORDER,
    TEMPLATES,
    GraphError,
    MediaRef,
    check_against_catalog,
    digits_of,
    inbound_message,
    inbound_preview,
    invalid_token_error,
    is_dialable,
    messages_envelope,
    new_numeric_id,
    new_wamid,
    preview,
    status_object,
    statuses_envelope,
    template_create,
    template_delete,
    template_page,
    template_quality_envelope,
    template_status_envelope,
    template_upsert,
    validate_send,
    wire_bytes,
)

# The customer-service window: any message inside it, only templates outside (error 131047).
WINDOW_SECONDS = 24 * 60 * 60
AUTO_STATUS_PLANS = {
    "none": (),
    "sent": ("sent",),
    "delivered": ("sent", "delivered"),
    "read": ("sent", "delivered", "read"),
}
FAULT_MODES = ("sync", "async", "timeout")
# What Meta's review of a submitted template decides, after `template_review_delay` seconds;
# "manual" leaves it PENDING for POST /_simulator/templates/review.
TEMPLATE_REVIEWS = ("approve", "reject", "manual")
# A status event's effect on the catalog entry (Meta's message_template_status_update events); None
# removes it, an event not listed (FLAGGED, LOCKED…) leaves the status as it is.
TEMPLATE_EVENT_STATUS = {
    "APPROVED": "APPROVED",
    "REINSTATED": "APPROVED",
    "UNARCHIVED": "APPROVED",
    "PENDING": "PENDING",
    "IN_APPEAL": "IN_APPEAL",
    "REJECTED": "REJECTED",
    "PAUSED": "PAUSED",
    "DISABLED": "DISABLED",
    "ARCHIVED": "ARCHIVED",
    "DELETED": None,
    "PENDING_DELETION": None,
}
TEMPLATE_EVENTS = (*TEMPLATE_EVENT_STATUS, "FLAGGED", "LOCKED", "UNLOCKED", "LIMIT_EXCEEDED")
QUALITY_SCORES = ("GREEN", "YELLOW", "RED", "UNKNOWN")
REJECTION = {
    "reason": "The template's format is not valid.",
    "recommendation": "Check the variables and the sample values, then submit it again.",
}
OBJECT_ID = r"(?P<object_id>[^/_][^/]*)"  # a Graph object id; never one of our /_ paths


@dataclass
class Channel:
    phone_number_id: str
    access_token: str
    app_secret: str
    webhook_url: str = ""
    verify_token: str = ""
    display_phone_number: str = ""
    waba_id: str = ""
    name: str = ""

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Channel:
        missing = [k for k in ("phone_number_id", "access_token", "app_secret") if not body.get(k)]
        if missing:
            raise ControlError(f"missing {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        values = {k: str(v) for k, v in body.items() if k in known and v is not None}
        channel = cls(**values)
        if channel.webhook_url:
            assert_loopback(channel.webhook_url)
        channel.display_phone_number = channel.display_phone_number or channel.phone_number_id
        channel.waba_id = channel.waba_id or f"WABA{channel.phone_number_id}"
        channel.name = channel.name or channel.display_phone_number
        return channel

    def as_dict(self) -> dict[str, Any]:
        return {"kind": WhatsApp.kind, **asdict(self)}

    def public(self) -> dict[str, Any]:
        """What the page may show: no token, no secret."""
        return {
            "kind": WhatsApp.kind,
            "phone_number_id": self.phone_number_id,
            "display_phone_number": self.display_phone_number,
            "name": self.name,
        }


@dataclass
class Settings:
    auto_status: str = "delivered"  # which statuses follow a successful send, see AUTO_STATUS_PLANS
    status_delay: float = 0.2  # seconds before each automatic status webhook
    rate_per_second: int = 80  # Cloud API default throughput per phone number
    invalid_numbers: list[str] = field(default_factory=list)  # digits; sends fail with 131026
    webhook_attempts: int = 4
    webhook_backoff: float = 0.25
    webhook_timeout: float = 3.0
    templates_page_size: int = 100  # the largest page of templates one call returns, whatever `limit` asks
    template_review: str = "approve"  # what the review of a submitted template decides, see TEMPLATE_REVIEWS
    template_review_delay: float = 2.0  # seconds from submission to the review's status webhook

    def update(self, body: dict[str, Any]) -> None:
        types = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        unknown = set(body) - set(types) - {"kind"}
        if unknown:
            raise ControlError(f"unknown settings {sorted(unknown)}; known: {sorted(types)}")
        changes = {key: self._coerce(key, value, types[key]) for key, value in body.items() if key != "kind"}
        for key, value in changes.items():  # all or nothing: a bad value leaves settings untouched
            setattr(self, key, value)

    @staticmethod
    def _coerce(key: str, value: Any, kind: type) -> Any:
        if key == "auto_status" and value not in AUTO_STATUS_PLANS:
            raise ControlError(f"auto_status must be one of {sorted(AUTO_STATUS_PLANS)}")
        if key == "template_review" and value not in TEMPLATE_REVIEWS:
            raise ControlError(f"template_review must be one of {list(TEMPLATE_REVIEWS)}")
        if kind is list:
            if not isinstance(value, list):
                raise ControlError(f"{key} must be a list")
            return [digits_of(v) for v in value]
        try:
            return kind(value)
        except (TypeError, ValueError) as exc:
            raise ControlError(f"{key} must be a {kind.__name__}") from exc

    @property
    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(self.webhook_attempts, self.webhook_backoff, self.webhook_timeout)


@dataclass
class Fault:
    phone_number_id: str
    code: int
    mode: str = "sync"
    remaining: int = 1
    http_status: int = 0
    message: str = ""
    details: str = ""
    error_subcode: int | None = None
    delay: float = 15.0  # timeout mode: longer than the 10 s a connector should wait

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Fault:
        mode = body.get("mode", "sync")
        if mode not in FAULT_MODES:
            raise ControlError(f"mode must be one of {FAULT_MODES}")
        if mode != "timeout" and not body.get("code"):
            raise ControlError("code is required (e.g. 130429)")
        try:
            return cls(
                phone_number_id=str(body["phone_number_id"]),
                code=int(body.get("code") or 0),
                mode=mode,
                remaining=int(body.get("count", 1)),
                http_status=int(body.get("http_status") or 0),
                message=str(body.get("message", "")),
                details=str(body.get("details", "")),
                error_subcode=body.get("error_subcode"),
                delay=float(body.get("delay", 15.0)),
            )
        except (TypeError, ValueError) as exc:
            raise ControlError(f"bad fault: {exc}") from exc

    def __post_init__(self) -> None:
        self.http_status = self.http_status or GraphError(self.code).http_status

    def error(self) -> GraphError:
        return GraphError(self.code, self.details, message=self.message, http_status=self.http_status)


@dataclass
class StoredMedia:
    id: str
    data: bytes
    mime_type: str
    filename: str
    phone_number_id: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def ref(self) -> MediaRef:
        return MediaRef(self.id, self.mime_type, self.sha256, self.filename)


@dataclass
class Outbound:
    """One send call Parley made, whatever its outcome."""

    seq: int
    phone_number_id: str
    to: str
    wa_id: str
    body: Any
    time: float
    http_status: int
    response: dict[str, Any]
    wamid: str | None = None
    category: str | None = None  # the template's category; None for free-form
    callback_data: str | None = None
    statuses: list[str] = field(default_factory=list)  # status webhooks sent, in order
    errors: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0  # the reset generation the send arrived in

    @property
    def state(self) -> str:
        if "failed" in self.statuses:
            return "failed"
        if self.wamid is None:
            return "rejected"
        return max(self.statuses, key=STATUS_ORDER.index, default="accepted")

    def as_dict(self) -> dict[str, Any]:
        listed = asdict(self)
        listed.update(state=self.state, type=_send_type(self.body))
        return listed


@dataclass
class Inbound:
    """One message the simulated customer wrote."""

    seq: int
    phone_number_id: str
    wa_id: str
    name: str
    wamid: str
    message: dict[str, Any]
    time: float
    generation: int
    parley_statuses: list[int | None] = field(default_factory=list)  # one per delivery attempt


def _send_type(body: Any) -> str | None:
    return body.get("type", "text") if isinstance(body, dict) else None


def signature_headers(app_secret: str, raw: bytes) -> dict[str, str]:
    """Meta signs the raw body with the app secret (SHA-256, and legacy SHA-1)."""
    secret = app_secret.encode()
    return {
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest(),
        "X-Hub-Signature": "sha1=" + hmac.new(secret, raw, hashlib.sha1).hexdigest(),
    }


WEBHOOK_HEADERS = {"Content-Type": "application/json", "User-Agent": "facebookexternalua"}


class WhatsApp(Provider):
    kind = "whatsapp"

    def __init__(self, simulator):
        super().__init__(simulator)
        self.channels_by_id: dict[str, Channel] = {}
        self._clear()

    def _clear(self) -> None:
        self.settings = Settings()
        self.faults: dict[str, list[Fault]] = {}
        self.media: dict[str, StoredMedia] = {}
        self.outbox: list[Outbound] = []
        self.inbound: list[Inbound] = []
        self.webhooks: list[dict[str, Any]] = []
        self.last_inbound: dict[tuple[str, str], float] = {}
        self.recent_sends: dict[str, deque[float]] = {}
        self.conversations: dict[tuple[str, str, str], str] = {}
        self.templates: dict[str, list[dict[str, Any]]] = {}  # per business account (waba_id)
        # Bumped by reset. Work that began before a reset (a send held by a timeout fault, webhook
        # retries, scheduled statuses) belongs to the old generation and stops or goes unrecorded,
        # so one test's late callbacks never land in the next test.
        self.generation = getattr(self, "generation", 0) + 1

    # Provider hooks -----------------------------------------------------------------------------

    def register_channel(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = Channel.from_body(body)
        with self.lock:
            self.channels_by_id[channel.phone_number_id] = channel
        return channel.as_dict()

    def channels(self) -> list[dict[str, Any]]:
        with self.lock:
            return [c.as_dict() for c in self.channels_by_id.values()]

    def reset(self, *, channels: bool) -> None:
        with self.lock:
            self._clear()
            if channels:
                self.channels_by_id.clear()

    def api_routes(self) -> list[Route]:
        return [
            route("POST", rf"/{OBJECT_ID}/messages", self._send),
            route("POST", rf"/{OBJECT_ID}/media", self._upload_media),
            route("GET", rf"/{OBJECT_ID}/message_templates", self._templates),
            route("POST", rf"/{OBJECT_ID}/message_templates", self._create_template),
            route("DELETE", rf"/{OBJECT_ID}/message_templates", self._delete_template),
            route("GET", r"/_media/(?P<media_id>[^/]+)", self._download_media),
            route("GET", rf"/{OBJECT_ID}", self._get_object),
            route("DELETE", rf"/{OBJECT_ID}", self._delete_media),
        ]

    def control_verbs(self) -> dict[tuple[str, str], Callable[[Request], Response]]:
        return {
            ("POST", "inbound"): self._inbound,
            ("POST", "inbound/raw"): self._inbound_raw,
            ("POST", "verify"): self._verify,
            ("POST", "faults"): self._add_fault,
            ("GET", "faults"): self._list_faults,
            ("POST", "statuses"): self._push_status,
            ("GET", "outbox"): self._list_outbox,
            ("GET", "thread"): self._thread,
            ("GET", "settings"): self._get_settings,
            ("POST", "settings"): self._update_settings,
            ("POST", "window"): self._set_window,
            ("GET", "webhooks"): self._list_webhooks,
            ("GET", "media"): self._media_bytes,
            ("GET", "templates"): self._list_templates,
            ("POST", "templates"): self._put_template,
            ("POST", "templates/delete"): self._delete_templates,
            ("POST", "templates/review"): self._review_template,
            ("POST", "templates/quality"): self._rate_template,
        }

    # Graph API: sending -------------------------------------------------------------------------

    def _send(self, request: Request, object_id: str) -> Response | None:
        channel = self._channel(object_id)
        if channel is None:
            return None
        body = _json_or_none(request)
        generation = self.generation
        fault = None
        try:
            self._check_token(request, [channel])
            fault = self._take_fault(channel.phone_number_id)
            if fault and fault.mode == "timeout":
                time.sleep(fault.delay)  # then answer normally: the send did happen
            if fault and fault.mode == "sync":
                raise fault.error()
            kind = validate_send(body)
            category = self._check_references(channel, body, kind)
            self._take_rate_slot(channel.phone_number_id)
        except GraphError as error:
            subcode = fault.error_subcode if fault and fault.mode == "sync" else None
            payload = error.body(subcode=subcode)
            self._record_send(channel, body, error.http_status, payload, generation=generation)
            return json_response(payload, error.http_status)
        async_fault = fault if fault and fault.mode == "async" else None
        return self._accept(channel, body, kind, category, async_fault, generation)

    def _accept(
        self, channel: Channel, body: dict, kind: str, category: str | None, fault: Fault | None, generation: int
    ) -> Response:
        to = body["to"]
        wa_id = digits_of(to) or to
        wamid = new_wamid()
        accepted = {"id": wamid, "message_status": "accepted"} if kind == "template" else {"id": wamid}
        payload = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": wa_id}],
            "messages": [accepted],
        }
        record = self._record_send(channel, body, 200, payload, wamid=wamid, category=category, generation=generation)
        failure = fault.error() if fault else self._delivery_failure(channel, to, wa_id, kind)
        response = json_response(payload)
        response.after.append(lambda: in_background(self._follow_up, channel, record, failure))
        return response

    def _delivery_failure(self, channel: Channel, to: str, wa_id: str, kind: str) -> GraphError | None:
        """Failures Meta reports only later, in a `failed` status: the send itself succeeds."""
        if not is_dialable(to) or wa_id in self.settings.invalid_numbers:
            return GraphError(131026)
        if kind != "template" and not self._window_open(channel.phone_number_id, wa_id):
            return GraphError(131047)
        return None

    def _follow_up(self, channel: Channel, record: Outbound, failure: GraphError | None) -> None:
        plan = ("failed",) if failure else AUTO_STATUS_PLANS[self.settings.auto_status]
        for status in plan:
            time.sleep(self.settings.status_delay)
            if self.generation != record.generation:
                return
            errors = [failure.webhook_error()] if failure else None
            self._emit_status(channel, record, status, errors)

    def _record_send(self, channel: Channel, body: Any, http_status: int, response: dict, **accepted: Any) -> Outbound:
        to = str(body.get("to", "")) if isinstance(body, dict) else ""
        callback = body.get("biz_opaque_callback_data") if isinstance(body, dict) else None
        record = Outbound(
            seq=self.simulator.next_seq(),
            phone_number_id=channel.phone_number_id,
            to=to,
            wa_id=digits_of(to) or to,
            body=body,
            time=time.time(),
            http_status=http_status,
            response=response,
            callback_data=callback,
            **accepted,
        )
        with self.lock:
            if self.generation == record.generation:
                self.outbox.append(record)
        return record

    def _check_token(self, request: Request, channels: list[Channel]) -> None:
        token = request.bearer_token or ""
        if not any(hmac.compare_digest(token, c.access_token) for c in channels):
            raise invalid_token_error()

    def _take_fault(self, phone_number_id: str) -> Fault | None:
        with self.lock:
            queue = self.faults.get(phone_number_id) or []
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.pop(0)
            return fault

    def _check_references(self, channel: Channel, body: dict, kind: str) -> str | None:
        """Checks that need state: media ids must exist, templates must match the catalog."""
        if kind in MEDIA_TYPES and body[kind].get("id"):
            with self.lock:
                known = body[kind]["id"] in self.media
            if not known:
                raise GraphError(131009, f"{kind}.id {body[kind]['id']!r} is not a known media id")
        if kind == "template":
            with self.lock:
                return check_against_catalog(body["template"], self._catalog(channel.waba_id))
        return None

    def _take_rate_slot(self, phone_number_id: str) -> None:
        now = time.monotonic()
        with self.lock:
            sent = self.recent_sends.setdefault(phone_number_id, deque())
            while sent and now - sent[0] >= 1.0:
                sent.popleft()
            if len(sent) >= self.settings.rate_per_second:
                raise GraphError(130429)
            sent.append(now)

    # Graph API: media, templates, phone number --------------------------------------------------

    def _upload_media(self, request: Request, object_id: str) -> Response | None:
        channel = self._channel(object_id)
        if channel is None:
            return None
        try:
            self._check_token(request, [channel])
            form = _multipart(request)
            if form.get("messaging_product", (b"",))[0] != b"whatsapp":
                raise GraphError(100, "messaging_product is required and must be 'whatsapp'")
            if "file" not in form:
                raise GraphError(100, "file is required (multipart/form-data)")
        except GraphError as error:
            return json_response(error.body(), error.http_status)
        data, filename, part_type = form["file"]
        mime_type = (form.get("type") or (b"",))[0].decode() or part_type or "application/octet-stream"
        stored = self._store_media(channel, data, mime_type, filename or "upload")
        return json_response({"id": stored.id})

    def _get_object(self, request: Request, object_id: str) -> Response | None:
        stored, owners = self._media_and_owners(object_id)
        if stored is None:
            channel = self._channel(object_id)
            return self._phone_number(request, channel) if channel else None
        try:
            self._check_token(request, owners)
        except GraphError as error:
            return json_response(error.body(), error.http_status)
        return json_response(
            {
                "messaging_product": "whatsapp",
                "url": f"{self.simulator.base_url}/_media/{stored.id}",
                "mime_type": stored.mime_type,
                "sha256": stored.sha256,
                "file_size": len(stored.data),
                "id": stored.id,
            }
        )

    def _phone_number(self, request: Request, channel: Channel) -> Response:
        try:
            self._check_token(request, [channel])
        except GraphError as error:
            return json_response(error.body(), error.http_status)
        return json_response(
            {
                "verified_name": channel.name,
                "display_phone_number": channel.display_phone_number,
                "id": channel.phone_number_id,
                "quality_rating": "GREEN",
                "platform_type": "CLOUD_API",
                "throughput": {"level": "STANDARD"},
            }
        )

    def _download_media(self, request: Request, media_id: str) -> Response:
        stored, owners = self._media_and_owners(media_id)
        if stored is None:
            return json_response(GraphError(100, f"media {media_id} does not exist").body(), 404)
        try:
            self._check_token(request, owners)
        except GraphError as error:
            return json_response(error.body(), error.http_status)
        return Response(200, stored.data, stored.mime_type)

    def _delete_media(self, request: Request, object_id: str) -> Response | None:
        stored, owners = self._media_and_owners(object_id)
        if stored is None:
            return None
        try:
            self._check_token(request, owners)
        except GraphError as error:
            return json_response(error.body(), error.http_status)
        with self.lock:
            self.media.pop(object_id, None)
        return json_response({"success": True})

    def _templates(self, request: Request, object_id: str) -> Response | None:
        with self.lock:
            owners = [c for c in self.channels_by_id.values() if c.waba_id == object_id]
        if not owners:
            return None
        url = f"{self.simulator.base_url}{request.raw_path}"
        try:
            self._check_token(request, owners)
            with self.lock:
                catalog = list(self._catalog(object_id))
            page = template_page(catalog, request.query, url=url, max_limit=self.settings.templates_page_size)
        except GraphError as error:
            return json_response(error.body(), error.http_status)
        return json_response(page)

    def _create_template(self, request: Request, object_id: str) -> Response | None:
        """A template submitted for review: checked as Meta checks it, stored PENDING, and reviewed
        in the background after `template_review_delay` (see TEMPLATE_REVIEWS)."""
        owners = self._waba_channels(object_id)
        if not owners:
            return None
        generation = self.generation
        try:
            self._check_token(request, owners)
            with self.lock:
                created = copy.deepcopy(template_create(self._catalog(object_id), _json_or_none(request)))
        except GraphError as error:
            return json_response(error.body(), error.http_status)
        response = json_response({"id": created["id"], "status": created["status"], "category": created["category"]})
        if self.settings.template_review != "manual":
            response.after.append(lambda: in_background(self._review_later, object_id, created, generation))
        return response

    def _review_later(self, waba_id: str, created: dict[str, Any], generation: int) -> None:
        time.sleep(self.settings.template_review_delay)
        with self.lock:
            current = next((t for t in self._catalog(waba_id) if t["id"] == created["id"]), None)
        if self.generation != generation or current is None or current["status"] != "PENDING":
            return  # reset, deleted, or reviewed by hand meanwhile
        if self.settings.template_review == "approve":
            self._template_event(waba_id, current, "APPROVED")
        else:
            self._template_event(waba_id, current, "REJECTED", reason="INVALID_FORMAT", rejection_info=REJECTION)

    def _delete_template(self, request: Request, object_id: str) -> Response | None:
        owners = self._waba_channels(object_id)
        if not owners:
            return None
        try:
            self._check_token(request, owners)
            with self.lock:
                template_delete(self._catalog(object_id), request.query.get("name"), request.query.get("hsm_id"))
        except GraphError as error:
            return json_response(error.body(), error.http_status)
        return json_response({"success": True})

    def _waba_channels(self, waba_id: str) -> list[Channel]:
        with self.lock:
            return [c for c in self.channels_by_id.values() if c.waba_id == waba_id]

    def _catalog(self, waba_id: str) -> list[dict[str, Any]]:
        """The account's templates, the stock catalog until changed; call with the lock held."""
        if waba_id not in self.templates:
            self.templates[waba_id] = copy.deepcopy(TEMPLATES)
        return self.templates[waba_id]

    def _media_and_owners(self, media_id: str) -> tuple[StoredMedia | None, list[Channel]]:
        """A media file and the channels whose token may read it: any number of the same
        business account, as with Meta's WABA-scoped tokens."""
        with self.lock:
            stored = self.media.get(media_id)
            if stored is None:
                return None, []
            owner = self.channels_by_id.get(stored.phone_number_id)
            waba = owner.waba_id if owner else None
            owners = [c for c in self.channels_by_id.values() if c.waba_id == waba]
            return stored, owners

    def _store_media(self, channel: Channel, data: bytes, mime_type: str, filename: str) -> StoredMedia:
        stored = StoredMedia(new_numeric_id(), data, mime_type, filename, channel.phone_number_id)
        with self.lock:
            self.media[stored.id] = stored
        return stored

    # Control: the customer writes ---------------------------------------------------------------

    def _inbound(self, request: Request) -> Response:
        body = request.json_object()
        channel = self._require_channel(body, needs_webhook=True)
        wa_id = digits_of(body.get("from"))
        if not wa_id:
            raise ControlError("from must be the customer's phone number (digits, + allowed)")
        record = self._customer_message(channel, wa_id, body)
        payload = messages_envelope(channel, wa_id, record.name, record.message)
        if body.get("wait"):
            delivery = self._deliver_inbound(channel, record, payload)
            return json_response({"id": record.wamid, "status": delivery.status, "attempts": len(delivery.statuses)})
        response = json_response({"id": record.wamid, "delivered": None, "message": record.message}, 202)
        response.after.append(lambda: in_background(self._deliver_inbound, channel, record, payload))
        return response

    def _customer_message(self, channel: Channel, wa_id: str, body: dict[str, Any]) -> Inbound:
        kind = body.get("type", "text")
        try:
            timestamp = int(body.get("timestamp") or time.time())
        except (TypeError, ValueError) as exc:
            raise ControlError("timestamp must be unix seconds") from exc
        media = self._sample_media(channel, body).ref() if kind in MEDIA_TYPES else None
        wamid = new_wamid()
        try:
            message = inbound_message(
                body,
                wamid=wamid,
                wa_id=wa_id,
                timestamp=str(timestamp),
                business_number=digits_of(channel.display_phone_number),
                media=media,
            )
        except ValueError as exc:
            raise ControlError(str(exc)) from exc
        name = str(body.get("name") or f"Customer {wa_id[-4:]}")
        record = Inbound(
            self.simulator.next_seq(),
            channel.phone_number_id,
            wa_id,
            name,
            wamid,
            message,
            time.time(),
            self.generation,
        )
        key = (channel.phone_number_id, wa_id)
        with self.lock:
            self.inbound.append(record)
            self.last_inbound[key] = max(self.last_inbound.get(key, 0.0), float(timestamp))
        return record

    def _sample_media(self, channel: Channel, body: dict[str, Any]) -> StoredMedia:
        sample = sample_for(body["type"])
        mime_type = str(body.get("mime_type") or sample.mime_type)
        filename = str(body.get("filename") or sample.filename)
        return self._store_media(channel, sample.data, mime_type, filename)

    def _deliver_inbound(self, channel: Channel, record: Inbound, payload: dict) -> Delivery:
        delivery = self._post_webhook(channel, payload, f"message {record.message['type']}", record.generation)
        with self.lock:
            record.parley_statuses = delivery.statuses
        return delivery

    def _inbound_raw(self, request: Request) -> Response:
        body = request.json_object()
        channel = self._require_channel(body, needs_webhook=True)
        if "body" not in body:
            raise ControlError("body is required: the JSON envelope (or a string sent verbatim)")
        raw = body["body"].encode() if isinstance(body["body"], str) else wire_bytes(body["body"])
        headers = {**WEBHOOK_HEADERS, **_raw_signature(channel, raw, body.get("signature", "good"))}
        times = int(body.get("times", 1))
        if not 1 <= times <= 50:
            raise ControlError("times must be between 1 and 50")
        statuses = post_repeatedly(
            channel.webhook_url,
            raw,
            headers,
            times=times,
            concurrent=bool(body.get("concurrent")),
            timeout=self.settings.webhook_timeout,
        )
        return json_response({"statuses": statuses})

    def _verify(self, request: Request) -> Response:
        body = request.json_object()
        channel = self._require_channel(body, needs_webhook=True)
        challenge = str(10**9 + secrets.randbelow(9 * 10**9))
        query = urlencode(
            {
                "hub.mode": "subscribe",
                "hub.verify_token": body.get("verify_token", channel.verify_token),
                "hub.challenge": challenge,
            }
        )
        separator = "&" if "?" in channel.webhook_url else "?"
        url = channel.webhook_url + separator + query
        status, answer = http_call("GET", url, timeout=self.settings.webhook_timeout)
        challenge_ok = status == 200 and answer == challenge.encode()
        return json_response({"status": status, "challenge_ok": challenge_ok, "challenge": challenge})

    def _set_window(self, request: Request) -> Response:
        body = request.json_object()
        channel = self._require_channel(body)
        wa_id = digits_of(body.get("wa_id") or body.get("from"))
        if not wa_id:
            raise ControlError("wa_id is required")
        key = (channel.phone_number_id, wa_id)
        hours_ago = body.get("hours_ago")
        with self.lock:
            if hours_ago is None:
                self.last_inbound.pop(key, None)
            else:
                self.last_inbound[key] = time.time() - float(hours_ago) * 3600
            last = self.last_inbound.get(key)
        return json_response(
            {
                "wa_id": wa_id,
                "last_inbound_at": last,
                "window_open": self._window_open(*key),
            }
        )

    # Control: faults, statuses, settings ---------------------------------------------------------

    def _add_fault(self, request: Request) -> Response:
        body = request.json_object()
        channel = self._require_channel(body)
        fault = Fault.from_body(body)
        with self.lock:
            self.faults.setdefault(channel.phone_number_id, []).append(fault)
            pending = [asdict(f) for f in self.faults[channel.phone_number_id]]
        return json_response({"fault": asdict(fault), "pending": pending}, 201)

    def _list_faults(self, request: Request) -> Response:
        wanted = request.query.get("phone_number_id")
        with self.lock:
            listed = [asdict(f) for number, queue in self.faults.items() if wanted in (None, number) for f in queue]
        return json_response(listed)

    def _push_status(self, request: Request) -> Response:
        body = request.json_object()
        channel = self._require_channel(body)
        status = body.get("status")
        if status not in ("sent", "delivered", "read", "failed"):
            raise ControlError("status must be sent, delivered, read or failed")
        record = self._outbound_for_status(channel, body)
        errors = None
        if status == "failed":
            errors = body.get("errors") or [GraphError(int(body.get("code", 131000))).webhook_error()]
        delivery = self._emit_status(channel, record, status, errors)
        return json_response({"id": record.wamid, "status": delivery.status})

    def _outbound_for_status(self, channel: Channel, body: dict[str, Any]) -> Outbound:
        wamid = body.get("wamid")
        if not wamid:
            raise ControlError("wamid is required")
        with self.lock:
            record = next((r for r in self.outbox if r.wamid == wamid), None)
        if record is not None:
            return record
        recipient = digits_of(body.get("recipient_id"))
        if not recipient:
            raise ControlError(f"no sent message {wamid!r}; pass recipient_id to send anyway", 404)
        return Outbound(
            0,
            channel.phone_number_id,
            recipient,
            recipient,
            None,
            time.time(),
            200,
            {},
            wamid,
            generation=self.generation,
        )

    def _get_settings(self, request: Request) -> Response:
        with self.lock:
            return json_response(asdict(self.settings))

    def _update_settings(self, request: Request) -> Response:
        body = request.json_object()
        with self.lock:
            self.settings.update(body)
            return json_response(asdict(self.settings))

    # Control: what happened ---------------------------------------------------------------------

    def _list_outbox(self, request: Request) -> Response:
        number = request.query.get("phone_number_id")
        to = digits_of(request.query.get("to"))
        with self.lock:
            listed = [
                r.as_dict() for r in self.outbox if number in (None, "", r.phone_number_id) and to in ("", r.wa_id)
            ]
        return json_response(listed)

    def _list_webhooks(self, request: Request) -> Response:
        number = request.query.get("phone_number_id")
        with self.lock:
            listed = [w for w in self.webhooks if number in (None, "", w["phone_number_id"])]
        return json_response(listed)

    def _thread(self, request: Request) -> Response:
        channel = self._require_channel(request.query)
        wa_id = digits_of(request.query.get("wa_id"))
        if not wa_id:
            raise ControlError("wa_id is required")
        number = channel.phone_number_id
        with self.lock:
            ins = [_thread_in(r) for r in self.inbound if (r.phone_number_id, r.wa_id) == (number, wa_id)]
            catalog = self._catalog(channel.waba_id)
            outs = [
                _thread_out(r, catalog)
                for r in self.outbox
                if (r.phone_number_id, r.wa_id) == (number, wa_id) and r.wamid
            ]
        return json_response(
            {
                "channel": channel.public(),
                "wa_id": wa_id,
                "window_open": self._window_open(number, wa_id),
                "messages": sorted(ins + outs, key=lambda m: m["seq"]),
            }
        )

    def _media_bytes(self, request: Request) -> Response:
        """The page shows media without a bearer token; only this loopback control API can."""
        with self.lock:
            stored = self.media.get(request.query.get("id", ""))
        if stored is None:
            raise ControlError("no such media", 404)
        return Response(200, stored.data, stored.mime_type)

    # Control: the business account's templates --------------------------------------------------

    def _waba_of(self, body: Any) -> str:
        if body.get("waba_id"):
            return str(body["waba_id"])
        return self._require_channel(body).waba_id

    def _list_templates(self, request: Request) -> Response:
        waba_id = self._waba_of(request.query)
        with self.lock:
            return json_response(copy.deepcopy(self._catalog(waba_id)))

    def _put_template(self, request: Request) -> Response:
        """Add a template in Meta's shape, or replace the one of that name and language (a status
        change: PENDING → APPROVED, or a pause)."""
        body = request.json_object()
        waba_id = self._waba_of(body)
        with self.lock:
            try:
                stored = template_upsert(self._catalog(waba_id), body.get("template"))
            except ValueError as exc:
                raise ControlError(str(exc)) from exc
            return json_response(copy.deepcopy(stored), 201)

    def _delete_templates(self, request: Request) -> Response:
        """Delete a template by name: every language, or only `language`."""
        body = request.json_object()
        waba_id, name, language = self._waba_of(body), body.get("name"), body.get("language")
        if not name:
            raise ControlError("name is required")
        with self.lock:
            catalog = self._catalog(waba_id)
            kept = [t for t in catalog if not (t["name"] == name and language in (None, "", t["language"]))]
            deleted = len(catalog) - len(kept)
            catalog[:] = kept
        return json_response({"deleted": deleted})

    def _review_template(self, request: Request) -> Response:
        """Meta's word on a template, now: `event` (APPROVED, REJECTED, PAUSED, DISABLED, FLAGGED,
        REINSTATED…) changes the catalog entry and is sent as the account's status webhook."""
        body = request.json_object()
        waba_id, event = self._waba_of(body), str(body.get("event", "")).upper()
        if event not in TEMPLATE_EVENTS:
            raise ControlError(f"event must be one of {list(TEMPLATE_EVENTS)}")
        template = self._catalog_entry(waba_id, body)
        info = {key: body[key] for key in ("rejection_info", "other_info", "disable_info") if body.get(key)}
        if event == "REJECTED" and not info:
            info["rejection_info"] = REJECTION
        reason = str(body.get("reason") or ("INVALID_FORMAT" if event == "REJECTED" else "NONE"))
        deliveries = self._template_event(waba_id, template, event, reason=reason, **info)
        return json_response({"template": template, "parley_statuses": [d.status for d in deliveries]})

    def _rate_template(self, request: Request) -> Response:
        """A template's quality changes (`quality`: GREEN, YELLOW, RED, UNKNOWN): the account's
        quality webhook."""
        body = request.json_object()
        waba_id, quality = self._waba_of(body), str(body.get("quality", "")).upper()
        if quality not in QUALITY_SCORES:
            raise ControlError(f"quality must be one of {list(QUALITY_SCORES)}")
        template = self._catalog_entry(waba_id, body)
        with self.lock:
            previous = (template.get("quality_score") or {}).get("score", "UNKNOWN")
            stored = next(t for t in self._catalog(waba_id) if t["id"] == template["id"])
            stored["quality_score"] = {"score": quality, "date": int(time.time())}
        envelope = template_quality_envelope(waba_id, template, previous, quality)
        deliveries = self._account_webhook(waba_id, envelope, f"template quality {quality}")
        return json_response({"template": stored, "parley_statuses": [d.status for d in deliveries]})

    def _catalog_entry(self, waba_id: str, body: dict[str, Any]) -> dict[str, Any]:
        name, language = body.get("name"), body.get("language")
        with self.lock:
            found = [t for t in self._catalog(waba_id) if t["name"] == name and language in (None, t["language"])]
        if len(found) != 1:
            raise ControlError(f"{len(found)} templates named {name!r} in {language or 'any language'}", 404)
        return copy.deepcopy(found[0])

    def _template_event(self, waba_id: str, template: dict[str, Any], event: str, **details: Any) -> list[Delivery]:
        """Applies a status event to the catalog, then tells every number of the account."""
        with self.lock:
            catalog = self._catalog(waba_id)
            stored = next((t for t in catalog if t["id"] == template["id"]), None)
            if stored is not None and event in TEMPLATE_EVENT_STATUS:
                status = TEMPLATE_EVENT_STATUS[event]
                if status is None:
                    catalog.remove(stored)
                else:
                    stored["status"] = status
                    stored["rejected_reason"] = details.get("reason", "NONE") if status == "REJECTED" else "NONE"
        envelope = template_status_envelope(waba_id, template, event, **details)
        return self._account_webhook(waba_id, envelope, f"template {event}")

    def _account_webhook(self, waba_id: str, envelope: dict[str, Any], what: str) -> list[Delivery]:
        """A business account's webhook goes to each webhook address of its numbers, once."""
        generation, seen, deliveries = self.generation, set(), []
        for channel in self._waba_channels(waba_id):
            if channel.webhook_url and channel.webhook_url not in seen:
                seen.add(channel.webhook_url)
                deliveries.append(self._post_webhook(channel, envelope, what, generation))
        return deliveries

    # Webhooks -------------------------------------------------------------------------------------

    def _emit_status(self, channel: Channel, record: Outbound, status: str, errors: list | None = None) -> Delivery:
        item = status_object(
            wamid=str(record.wamid),
            status=status,
            wa_id=record.wa_id,
            category=record.category,
            conversation_id=self._conversation_id(record),
            callback_data=record.callback_data,
            errors=errors,
        )
        with self.lock:
            record.statuses.append(status)
            record.errors = errors or record.errors
        envelope = statuses_envelope(channel, item)
        return self._post_webhook(channel, envelope, f"status {status}", record.generation)

    def _post_webhook(self, channel: Channel, payload: dict, what: str, generation: int) -> Delivery:
        if not channel.webhook_url:
            return Delivery("")
        raw = wire_bytes(payload)
        headers = {**WEBHOOK_HEADERS, **signature_headers(channel.app_secret, raw)}
        delivery = deliver(
            channel.webhook_url,
            raw,
            headers,
            self.settings.delivery_policy,
            cancelled=lambda: self.generation != generation,
        )
        with self.lock:
            if self.generation == generation:
                self.webhooks.append(
                    {
                        "seq": self.simulator.next_seq(),
                        "time": time.time(),
                        "what": what,
                        "phone_number_id": channel.phone_number_id,
                        "url": delivery.url,
                        "body": payload,
                        "parley_statuses": delivery.statuses,
                    }
                )
        return delivery

    def _conversation_id(self, record: Outbound) -> str:
        key = (record.phone_number_id, record.wa_id, record.category or "service")
        with self.lock:
            return self.conversations.setdefault(key, secrets.token_hex(16))

    # Lookups ---------------------------------------------------------------------------------------

    def _channel(self, phone_number_id: str) -> Channel | None:
        with self.lock:
            return self.channels_by_id.get(phone_number_id)

    def _require_channel(self, body: Any, *, needs_webhook: bool = False) -> Channel:
        number = str(body.get("phone_number_id") or "")
        channel = self._channel(number)
        if channel is None:
            raise ControlError(f"no whatsapp channel with phone_number_id {number!r}", 404)
        if needs_webhook and not channel.webhook_url:
            raise ControlError(f"channel {number} has no webhook_url", 409)
        return channel

    def _window_open(self, phone_number_id: str, wa_id: str) -> bool:
        with self.lock:
            last = self.last_inbound.get((phone_number_id, wa_id))
        return last is not None and time.time() - last < WINDOW_SECONDS


def _thread_in(record: Inbound) -> dict[str, Any]:
    statuses = record.parley_statuses
    return {
        "seq": record.seq,
        "direction": "in",
        "wamid": record.wamid,
        "time": record.time,
        "type": record.message["type"],
        "context": (record.message.get("context") or {}).get("id"),
        "preview": inbound_preview(record.message),
        "parley_status": statuses[-1] if statuses else None,
        "attempts": len(statuses),
    }


def _thread_out(record: Outbound, catalog: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "direction": "out",
        "wamid": record.wamid,
        "time": record.time,
        "type": _send_type(record.body),
        "context": (record.body.get("context") or {}).get("message_id"),
        "preview": preview(record.body, catalog),
        "state": record.state,
        "errors": record.errors,
    }


def _json_or_none(request: Request) -> Any:
    try:
        return request.json_body
    except ControlError:
        return None


def _multipart(request: Request) -> dict[str, tuple[bytes, str | None, str | None]]:
    """Form fields of a multipart/form-data body: name -> (bytes, filename, content type)."""
    content_type = request.header("Content-Type") or ""
    if not content_type.startswith("multipart/form-data"):
        raise GraphError(100, "media upload must be multipart/form-data")
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=email_policy.HTTP).parsebytes(head + request.body)
    if not message.is_multipart():
        raise GraphError(100, "could not parse the multipart body")
    form = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            filename = part.get_filename()
            part_type = part.get_content_type() if filename else None
            form[str(name)] = (part.get_payload(decode=True) or b"", filename, part_type)
    return form


def _raw_signature(channel: Channel, raw: bytes, mode: str) -> dict[str, str]:
    if mode == "good":
        return signature_headers(channel.app_secret, raw)
    if mode == "bad":
        return signature_headers(channel.app_secret + "-not-the-secret", raw)
    if mode == "none":
        return {}
    raise ControlError("signature must be good, bad or none")
