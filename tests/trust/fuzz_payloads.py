"""Mutated provider payloads for the parser fuzzers (tests/trust/test_fuzz_parsers.py).

Every channel starts from real deliveries, built by the same helpers its own tests use
(tests/connectors/*_payloads.py, tests/conversations/whatsapp.py), and hypothesis mutates them:
keys dropped, values swapped for the wrong type, huge or empty strings, odd unicode (NUL, lone
surrogates, right-to-left marks), nested junk, a body cut short, the wrong Content-Type. Each
`Target` then posts the result to the real webhook with a valid signature, signed as that
provider signs, so the parser behind the signature check is what meets it."""

import copy
import json
import math
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.conf import settings as django_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from apps.conversations.services.messages import _drain_slot_key
from apps.core.redis import get_redis
from tests.connectors import email_payloads as email
from tests.connectors import messenger_payloads as messenger
from tests.connectors import telegram_payloads as telegram
from tests.connectors import wechat_payloads as wechat
from tests.connectors.test_custom import make_custom_channel
from tests.connectors.test_custom import signature as custom_signature
from tests.conversations import whatsapp

# CI's budget; `make fuzz` sets FUZZ_EXAMPLES to thousands (docs/security.md, "Fuzzing").
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or 0)


def fuzz_settings(ci_examples: int, *, share: float = 1.0) -> settings:
    """Deterministic in CI (the same examples every run, no flaky failures), random and long when
    FUZZ_EXAMPLES asks for a real search; `share` of it for the slower end-to-end runs."""
    return settings(
        max_examples=max(ci_examples, int(FUZZ_EXAMPLES * share)) if FUZZ_EXAMPLES else ci_examples,
        deadline=None,
        derandomize=not FUZZ_EXAMPLES,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@contextmanager
def drain_slots_held():
    """The test drains, not a Celery worker that may be running (the live fixtures'): a webhook
    wakes no drainer while every slot is taken."""
    keys = [_drain_slot_key(slot) for slot in range(django_settings.INBOUND_DRAINERS)]
    for key in keys:
        get_redis().set(key, "1", ex=120)
    try:
        yield
    finally:
        get_redis().delete(*keys)


# Junk ---------------------------------------------------------------------------------------

ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "nul\x00inside",
    "\ud800",  # a lone surrogate: JSON may carry it ("\\ud800"); UTF-8 and PostgreSQL may not
    "\u202eevil",
    "𝕬𝖒𝖎𝖗𝖆 ✨ أميرة",
    "<script>alert(1)</script>",
    "]]><x/>",
    "9" * 400,
    "x" * 70_000,
    "NaN",
    "-1",
    "1e999",
    "+",
    "@",
    "a@b@c",
    "=?utf-8?q?=E2=82?=",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=40),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _with(value, path, change: Callable[[Any], Any]):
    """`value` with the item at `path` replaced by change(item); change returns DROP to remove it."""
    if not path:
        return change(value)
    head, rest = path[0], path[1:]
    copied = copy.copy(value)
    replaced = _with(copied[head], rest, change)
    if replaced is DROP:
        del copied[head]
    else:
        copied[head] = replaced
    return copied


DROP = object()


@st.composite
def mutated(draw, seeds: list) -> Any:
    """One of `seeds` with one to three mutations, each at any place in its tree."""
    value = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(list(_paths(value))))
        operation = draw(st.sampled_from(["drop", "replace", "replace", "wrap", "stringify", "grow"]))
        if operation == "drop" and path:
            value = _with(value, path, lambda _: DROP)
        elif operation == "wrap":
            value = _with(value, path, lambda item: [item])
        elif operation == "stringify":
            value = _with(value, path, lambda item: json.dumps(item))
        elif operation == "grow":
            value = _with(value, path, lambda item: {"a": [item, item], "b": {"c": item}})
        else:
            new = draw(junk)
            value = _with(value, path, lambda _, new=new: new)
    return value


def json_bytes(value) -> bytes:
    # Python writes NaN and Infinity, which Meta never does but json.loads accepts: fuzz them too.
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def mangled(draw, raw: bytes) -> bytes:
    """Byte-level damage: the body cut short, bytes flipped, or replaced by something else."""
    operation = draw(st.sampled_from(["keep", "keep", "keep", "truncate", "flip", "replace"]))
    if operation == "truncate" and raw:
        return raw[: draw(st.integers(min_value=0, max_value=len(raw) - 1))]
    if operation == "flip" and raw:
        at = draw(st.integers(min_value=0, max_value=len(raw) - 1))
        return raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at + 1 :]
    if operation == "replace":
        return draw(
            st.sampled_from(
                [b"", b"null", b"[]", b"{}", b"\xff\xfe\x00", b"[" * 100_000, b'{"a":' * 100_000, b"<xml>" * 50_000]
            )
            | st.binary(max_size=64)
        )
    return raw


# Channels -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One channel to fuzz: how to make it, its real payloads, and how a provider posts."""

    kind: str
    make_channel: Callable
    seeds: Callable[[], list]
    encode: Callable[[Any], tuple[bytes, str]]  # a (mutated) payload as the body and its Content-Type
    post: Callable  # post(client, channel, raw, content_type) -> response; None for web chat


def _json(value) -> tuple[bytes, str]:
    return json_bytes(value), "application/json"


def _meta_post(client, channel, raw: bytes, content_type: str):
    _, signature = whatsapp.signed(raw)
    return client.post(
        f"/webhooks/{channel.uuid}/", raw, content_type=content_type, headers={"X-Hub-Signature-256": signature}
    )


def _telegram_post(client, channel, raw: bytes, content_type: str):
    headers = {"X-Telegram-Bot-Api-Secret-Token": telegram.webhook_secret(channel)}
    return client.post(f"/webhooks/{channel.uuid}/", raw, content_type=content_type, headers=headers)


def _wechat_post(client, channel, raw: bytes, content_type: str):
    return client.post(wechat.push_url(channel, wechat.signed_query()), raw, content_type=content_type)


def _email_post(client, channel, raw: bytes, content_type: str):
    return client.post(f"/webhooks/{channel.uuid}/?{urlencode({'key': channel.verify_token})}", raw, content_type)


def _custom_post(client, channel, raw: bytes, content_type: str):
    headers = {"X-Parley-Signature": custom_signature(raw)}
    return client.post(f"/webhooks/{channel.uuid}/", raw, content_type=content_type, headers=headers)


def whatsapp_seeds() -> list:
    wa = whatsapp
    media = {"type": "image", "image": {"id": "MEDIA1", "mime_type": "image/jpeg", "sha256": "abc", "caption": "hi"}}
    interactive = {"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "b1"}}}
    others = [
        {**wa.text("", wamid="wamid.M"), "type": "image", **media},
        {**wa.text("", wamid="wamid.I"), **interactive},
        {**wa.text("", wamid="wamid.B"), "type": "button", "button": {"payload": "yes", "text": "Yes"}},
        {**wa.text("", wamid="wamid.L"), "type": "location", "location": {"latitude": 30.0, "longitude": 31.2}},
        {**wa.text("", wamid="wamid.R"), "type": "reaction", "reaction": {"message_id": "wamid.T", "emoji": "👍"}},
        {**wa.text("", wamid="wamid.C"), "type": "contacts", "contacts": [{"name": {"formatted_name": "Amira"}}]},
    ]
    failed = wa.status("wamid.OUT", "failed", errors=[{"code": 131047, "title": "Re-engagement message"}])
    return [
        wa.envelope(wa.messages_value(wa.text("Where is my order?", wamid="wamid.T", context={"id": "wamid.X"}))),
        wa.envelope(wa.messages_value(*others)),
        wa.envelope(wa.statuses_value(wa.status("wamid.OUT", "delivered", ts=1_700_000_000), failed)),
    ]


def messenger_seeds(kind: str) -> Callable[[], list]:
    def seeds() -> list:
        m = messenger
        files = m.attachments(("image", "https://cdn.example/p.jpg"), ("file", "https://cdn.example/a.pdf"), mid="m.A")
        location = {"type": "location", "title": "Home", "payload": {"coordinates": {"lat": 30.0, "long": 31.2}}}
        return [
            m.envelope(kind, m.text("Where is my order?", mid="m.T", reply_to={"mid": "m.X"})),
            m.envelope(kind, m.quick_reply("Yes", "YES", mid="m.Q"), files, m.attachments(location, mid="m.L")),
            m.envelope(kind, m.postback("Track", "TRACK"), m.reaction("m.T"), m.item(message_edit={"mid": "m.T"})),
            m.envelope(kind, m.delivery("m.OUT", watermark=1_700_000_000_000), m.read(watermark=1_700_000_000_000)),
        ]

    return seeds


def telegram_seeds() -> list:
    t = telegram
    menu = t.keyboard_message(9, "Pick one", [("Track", "track"), ("Agent", "agent")])
    return [
        t.text("Where is my order?", reply_to_message={"message_id": 1}),
        t.photo(caption="the box"),
        t.media("document"),
        t.media("sticker"),
        t.contact("+201001234567"),
        t.location(30.0, 31.2),
        t.edited(1, "Where is my order, please?"),
        t.callback_query(menu, "track"),
        t.my_chat_member("member", "kicked"),
        t.update(message_reaction={"chat": t.private_chat(), "user": t.AMIRA, "date": 1_700_000_000}),
    ]


def wechat_seeds() -> list:
    """WeChat pushes as (tag, value) pairs, mutated as a list and written as XML by `wechat_encode`."""

    def fields(*pairs, msg_type="text", msg_id=6_000_000_001):
        head = [["ToUserName", wechat.ORIGINAL_ID], ["FromUserName", wechat.OPENID], ["CreateTime", 1_700_000_000]]
        return [*head, ["MsgType", msg_type], *[list(pair) for pair in pairs], ["MsgId", msg_id]]

    return [
        fields(["Content", "Where is my order?"]),
        fields(["Content", "Oolong"], ["bizmsgmenuid", "opt-1"]),
        fields(["PicUrl", "http://mmbiz.qpic.cn/x"], ["MediaId", "MEDIA_IMG_1"], msg_type="image"),
        fields(["MediaId", "MEDIA_VOICE_1"], ["Format", "amr"], ["Recognition", "hello"], msg_type="voice"),
        fields(["MediaId", "MEDIA_VIDEO_1"], ["ThumbMediaId", "T1"], msg_type="shortvideo"),
        fields(["Location_X", 23.13], ["Location_Y", 113.35], ["Scale", 20], ["Label", "Tianhe"], msg_type="location"),
        fields(["Title", "Oolong guide"], ["Url", "https://tea.example/oolong"], msg_type="link"),
        [*fields(msg_type="event")[:4], ["Event", "subscribe"]],
        [*fields(msg_type="event")[:4], ["Event", "CLICK"], ["EventKey", "track"]],
        [*fields(msg_type="event")[:4], ["Event", "SCAN"], ["EventKey", "qr"]],
    ]


def wechat_encode(value) -> tuple[bytes, str]:
    """A mutated field list as WeChat writes it: CDATA for text, bare numbers; anything that is
    no longer a list of pairs is written as JSON inside <xml>, which the parser must refuse."""
    if not isinstance(value, list):
        return b"<xml>" + json_bytes(value) + b"</xml>", "text/xml"
    parts = []
    for pair in value:
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and pair[0].isidentifier():
            tag, item = pair
            if isinstance(item, dict | list):  # nested elements
                inner = "".join(f"<{k}>{v}</{k}>" for k, v in (item.items() if isinstance(item, dict) else []))
                parts.append(f"<{tag}>{inner or json.dumps(item)}</{tag}>")
            elif isinstance(item, int | float) and not isinstance(item, bool):
                parts.append(f"<{tag}>{item}</{tag}>")
            else:
                parts.append(f"<{tag}><![CDATA[{item}]]></{tag}>")
        else:
            parts.append(f"<junk>{json.dumps(pair)}</junk>")
    return ("<xml>" + "".join(parts) + "</xml>").encode("utf-8", "surrogatepass"), "text/xml"


def email_seeds() -> list:
    """SendGrid's default form (fields as a dict, its JSON fields as structures), its "Send Raw"
    form, and a bare MIME message."""
    mime = email.mime(
        "Where is my order?",
        html="<p>Where is my <b>order</b>?</p>",
        in_reply_to="parley-1@shop.example",
        files=(("receipt.pdf", "application/pdf", email.PDF, ""),),
    )
    default = {
        "headers": "From: Amira Said <amira@example.com>\nTo: help@shop.example\nSubject: Order #1001\n"
        "Message-ID: <CAN_1@mail.gmail.com>\nIn-Reply-To: <parley-1@shop.example>\n",
        "from": "Amira Said <amira@example.com>",
        "to": email.ADDRESS,
        "subject": "Order #1001",
        "text": "Where is my order?",
        "html": "<p>Where is my order?</p>",
        "envelope": {"to": [email.ADDRESS], "from": "amira@example.com"},
        "charsets": {"to": "UTF-8", "subject": "UTF-8", "from": "UTF-8", "text": "UTF-8", "html": "UTF-8"},
        "attachments": "1",
        "attachment-info": {"attachment1": {"filename": "receipt.pdf", "type": "application/pdf"}},
        "files": [["attachment1", "receipt.pdf", "application/pdf", "%PDF-1.4 ..."]],
    }
    bounce = email.mime(
        "Reporting-MTA: dns; mx.example.com\n\nAction: failed\nStatus: 5.1.1\nMessage-ID: <parley-1@shop.example>\n",
        sender="mailer-daemon@example.com",
        name="Mail Delivery System",
    )
    return [
        {"form": default},
        {"form": {"email": mime.decode(), "to": email.ADDRESS, "envelope": default["envelope"]}},
        {"mime": mime.decode()},
        {"mime": bounce.decode()},
    ]


def email_encode(value) -> tuple[bytes, str]:
    if isinstance(value, dict) and isinstance(value.get("mime"), str):
        return value["mime"].encode("utf-8", "surrogatepass"), "message/rfc822"
    form = value.get("form") if isinstance(value, dict) else value
    if not isinstance(form, dict):
        return json_bytes(value), "multipart/form-data; boundary=" + email.BOUNDARY
    files = form.get("files") if isinstance(form.get("files"), list) else []
    fields = [(name, _field(item)) for name, item in form.items() if name != "files"]
    parts = [[*map(str, part), "", "", "", ""][:4] for part in files if isinstance(part, list)]
    raw, content_type = email.form(fields, [(n, f, t, c.encode("utf-8", "surrogatepass")) for n, f, t, c in parts])
    return raw, content_type


def _field(item) -> bytes:
    text = item if isinstance(item, str) else json.dumps(item)
    return text.encode("utf-8", "surrogatepass")


def custom_seeds() -> list:
    sender = {"id": "user-42", "name": "Amira", "phone": "+201001234567", "email": "amira@example.com"}
    file = {"filename": "a.pdf", "content_type": "application/pdf", "data": "JVBERi0xLjQK"}
    return [
        {"events": [{"type": "message", "id": "m-1", "sender": sender, "text": "Where is my order?", "timestamp": 1}]},
        {"events": [{"type": "message", "id": "m-2", "sender": sender, "attachments": [file]}]},
        {"events": [{"type": "message", "id": "m-3", "sender": sender, "choice": {"id": "track", "title": "Track"}}]},
        {"events": [{"type": "message", "id": "m-4", "sender": sender, "location": {"latitude": 1, "longitude": 2}}]},
        {"events": [{"type": "status", "id": "parley-1", "state": "failed", "error": {"code": "x", "message": "y"}}]},
    ]


def webchat_seeds() -> list:
    return [
        {"visitor": "v-1", "customer_id": "", "events": [{"type": "message", "id": "w1", "text": "hi", "sent_at": 1}]},
        {
            "visitor": "v-1",
            "customer_id": "cust-9",
            "events": [
                {"type": "message", "id": "w2", "upload": {"path": "webchat/1/x.png", "content_type": "image/png"}},
                {"type": "status", "id": "out-1", "state": "read", "at": 1_700_000_000_000},
            ],
        },
    ]


TARGETS = {
    target.kind: target
    for target in (
        Target("whatsapp", whatsapp.make_whatsapp_channel, whatsapp_seeds, _json, _meta_post),
        Target(
            "messenger",
            lambda ws: messenger.make_meta_channel(ws, "messenger"),
            messenger_seeds("messenger"),
            _json,
            _meta_post,
        ),
        Target(
            "instagram",
            lambda ws: messenger.make_meta_channel(ws, "instagram"),
            messenger_seeds("instagram"),
            _json,
            _meta_post,
        ),
        Target("telegram", telegram.make_telegram_channel, telegram_seeds, _json, _telegram_post),
        Target("wechat", wechat.make_wechat_channel, wechat_seeds, wechat_encode, _wechat_post),
        Target("email", email.make_email_channel, email_seeds, email_encode, _email_post),
        Target("custom", make_custom_channel, custom_seeds, _json, _custom_post),
        Target("webchat", None, webchat_seeds, _json, None),
    )
}
OTHER_CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "", "text/xml"]


@st.composite
def delivery(draw, target: Target) -> tuple[bytes, str]:
    """A body and Content-Type as a provider (or something pretending to be one) might post."""
    raw, content_type = target.encode(draw(mutated(target.seeds())))
    raw = draw(mangled(raw))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        content_type = draw(st.sampled_from(OTHER_CONTENT_TYPES))
    return raw, content_type


def is_finite_json(value) -> bool:
    """Whether PostgreSQL's jsonb can hold it: no NaN or infinity, no NUL, no lone surrogate."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return "\x00" not in value and not any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return all(is_finite_json(k) and is_finite_json(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(is_finite_json(item) for item in value)
    return value is None or isinstance(value, bool | int)
