"""Email as a customer's mail client and the shop's mail provider see it.

Register: `{"kind": "email", "address": "help@shop.example", "name", "webhook_url": Parley's
inbound-parse URL with its ?key=, "mode": "webhook" | "imap", "send_raw"?: bool, "smtp_username"?,
"smtp_password"?, "imap_username"?, "imap_password"?}`.

- Parley sends through the simulator's SMTP server (`GET /_simulator/mail/servers?kind=email`
  gives `{smtp_port, imap_port}`; env SIMULATOR_SMTP_PORT / SIMULATOR_IMAP_PORT pin them). Mail
  from a registered address lands in the thread of (that channel, each recipient) and in the
  outbox with its headers, text, HTML and attachments. With smtp_password registered, the
  sender must log in (AUTH PLAIN or LOGIN) as smtp_username (default: the address).
  Recipients listed in the `bouncing` setting are refused with `550 5.1.1`; an injected fault
  (`POST /_simulator/faults {kind: "email", channel, status: 451, body: "4.3.0 Try later"}`)
  answers the next DATA with that SMTP reply.
- A customer's mail (`POST /_simulator/inbound {kind: "email", channel, user: their address,
  name, subject?, text, html?, attachment?: true, reply_to?}`) is a real MIME message answering
  the last Parley mail of the thread (In-Reply-To, References, "Re:" subject and the quoted
  history under the reply, as mail clients write it). In mode webhook it is POSTed like
  SendGrid Inbound Parse (multipart/form-data, boundary xYzZY; `send_raw` posts the whole MIME
  in `email` instead); in mode imap it is appended unseen to the address's IMAP INBOX, which
  Parley polls (LOGIN as imap_username, default the address, with imap_password if registered).
- `POST /_simulator/settings {kind: "email", bouncing: [addresses]}`; `GET /_simulator/mailbox
  ?kind=email&channel=` lists the INBOX (uid, flags, message_id, subject).

The servers start on the first registration or the first `mail/servers` call, not at import:
several simulators built in one process would otherwise fight over the same ports.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import threading
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formataddr, formatdate, make_msgid
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .chat import ChatProvider
from .core import ControlError, Request, Response, assert_loopback, json_response
from .mailservers import IMAPHandler, Mailbox, SMTPHandler, address_of, start
from .samples import sample_for

MENU_HEADING = "Reply with a number:"


class Email(ChatProvider):
    kind: ClassVar[str] = "email"
    key_field: ClassVar[str] = "address"

    def __init__(self, simulator):
        super().__init__(simulator)
        self._servers: dict[str, Any] = {}
        self._servers_lock = threading.Lock()

    def _clear(self) -> None:
        super()._clear()
        self.mailboxes: dict[str, Mailbox] = {}
        self.raw_mail: dict[str, bytes] = {}
        self.bouncing: set[str] = set()

    # Registration --------------------------------------------------------------------------

    def register_channel(self, body: dict[str, Any]) -> dict[str, Any]:
        address = address_of(str(body.get("address") or ""))
        if "@" not in address:
            raise ControlError("an email channel needs address, the support address")
        mode = body.get("mode") or "webhook"
        if mode not in ("webhook", "imap"):
            raise ControlError("mode is webhook or imap")
        if mode == "webhook":
            if not body.get("webhook_url"):
                raise ControlError("mode webhook needs webhook_url, Parley's inbound-parse URL with its ?key=")
            assert_loopback(str(body["webhook_url"]))
        channel = super().register_channel({**body, "address": address, "mode": mode})
        self.servers()
        return channel

    def describe(self, channel: dict[str, Any]) -> str:
        return channel["address"]

    def servers(self) -> dict[str, int]:
        with self._servers_lock:
            if not self._servers:
                self._servers = {
                    "smtp": start(SMTPHandler, int(os.environ.get("SIMULATOR_SMTP_PORT") or 0), self),
                    "imap": start(IMAPHandler, int(os.environ.get("SIMULATOR_IMAP_PORT") or 0), self),
                }
            return {f"{name}_port": server.server_address[1] for name, server in self._servers.items()}

    # What the mail servers ask -------------------------------------------------------------

    def smtp_login(self, username: str, password: str) -> bool:
        def accepts(channel: dict[str, Any]) -> bool:
            login = (channel.get("smtp_username") or channel["address"]).lower()
            return login == username.lower() and channel.get("smtp_password", "") in ("", password)

        return self.channel_where(accepts) is not None

    def smtp_sender(self, address: str, login: str | None) -> tuple[int, str] | None:
        """Only a registered address may send, and only after logging in if it has a password."""
        channel = self.channel(address)
        if channel is None:
            return 550, f"5.7.1 <{address}>: sender not registered with this provider"
        wanted = (channel.get("smtp_username") or address).lower()
        if channel.get("smtp_password") and (login or "").lower() != wanted:
            return 530, "5.7.0 Authentication required"
        return None

    def smtp_recipient(self, address: str) -> tuple[int, str] | None:
        with self.lock:
            bouncing = address in self.bouncing
        return (550, f"5.1.1 <{address}>: Recipient address rejected: User unknown") if bouncing else None

    def smtp_deliver(self, sender: str, recipients: list[str], data: bytes) -> tuple[int, str]:
        message = BytesParser(policy=policy.default).parsebytes(data)
        channel = self.channel(address_of(str(message.get("From") or ""))) or self.channel(sender)
        fault = self.take_fault(channel["id"]) if channel else None
        if fault is not None:
            return fault.status, _fault_text(fault.body)
        message_id = str(message.get("Message-ID") or "").strip().strip("<>") or make_msgid().strip("<>")
        with self.lock:
            self.raw_mail[message_id] = data
        entry = self._outgoing(message, message_id, len(data))
        for recipient in recipients:
            self.record_out(channel["id"], recipient, None, 250, **entry)
        return 250, f"2.0.0 Ok: queued as {message_id}"

    def imap_login(self, username: str, password: str) -> Mailbox | None:
        def accepts(channel: dict[str, Any]) -> bool:
            login = (channel.get("imap_username") or channel["address"]).lower()
            return login == username.lower() and channel.get("imap_password", "") in ("", password)

        channel = self.channel_where(accepts)
        return self.mailbox(channel["address"]) if channel else None

    def mailbox(self, address: str) -> Mailbox:
        with self.lock:
            return self.mailboxes.setdefault(address, Mailbox())

    # Parley's mail, as the customer reads it -----------------------------------------------

    def _outgoing(self, message: EmailMessage, message_id: str, size: int) -> dict[str, Any]:
        body = message.get_body(preferencelist=("plain",))
        html_body = message.get_body(preferencelist=("html",))
        text = body.get_content().replace("\r\n", "\n") if body is not None else ""
        attachments = [
            (part, part.get_payload(decode=True) or b"")
            for part in message.iter_attachments()
            if part is not body and part is not html_body
        ]
        files = [
            {"filename": part.get_filename() or "", "mime_type": part.get_content_type(), "size": len(content)}
            for part, content in attachments
        ]
        media = None
        if attachments:
            first, content = attachments[0]
            media_id = self.store_media(content, first.get_content_type(), first.get_filename() or "file")
            media = {
                "type": "image" if first.get_content_maintype() == "image" else "document",
                "id": media_id,
                "url": self.media_url(media_id),
                "filename": first.get_filename() or "",
            }
        return {
            "id": message_id,
            "type": "media" if attachments else "text",
            "text": text.strip(),
            "html": html_body.get_content() if html_body is not None else "",
            "subject": str(message.get("Subject") or ""),
            "headers": {name: str(value) for name, value in message.items()},
            "attachments": files,
            "media": media,
            "replies": _menu(text),
            "size": size,
        }

    # A customer's mail ----------------------------------------------------------------------

    def customer_event(self, channel: dict[str, Any], user: str, body: dict[str, Any]) -> dict[str, Any]:
        user = address_of(user) or user.lower()
        if "@" not in user:
            raise ControlError("user is the customer's email address")
        text = self._customer_text(body)
        attachment = bool(body.get("attachment")) or body.get("type") in ("image", "document", "attachment")
        if not (text or body.get("html") or attachment):
            raise ControlError("an email needs text, html or an attachment")
        parent = self._parent(channel, user, body.get("reply_to"))
        message = self._compose(channel, user, body, text, parent, attachment)
        message_id = str(message["Message-ID"]).strip("<>")
        raw = message.as_bytes(policy=policy.SMTP)
        with self.lock:
            self.raw_mail[message_id] = raw
        media = None
        if attachment:
            sample = sample_for("document")
            media_id = self.store_media(sample.data, sample.mime_type, sample.filename)
            media = {"type": "document", "id": media_id, "url": self.media_url(media_id), "filename": sample.filename}
        return {
            "id": message_id,
            "user": user,
            "type": "media" if attachment else "text",
            "text": text,
            "subject": str(message["Subject"]),
            "reply_to": parent.get("id") if parent else None,
            "media": media,
        }

    def _customer_text(self, body: dict[str, Any]) -> str:
        """A press of a menu "button" on the page is what a mail customer does: write its number."""
        if body.get("type") == "choice":
            return str((body.get("choice") or {}).get("id") or "")
        if body.get("type") == "location":
            where = ", ".join(str(body[k]) for k in ("name", "address") if body.get(k))
            return f"I am here: {where} ({body.get('latitude')}, {body.get('longitude')})".strip()
        return str(body.get("text") or body.get("caption") or "")

    def _parent(self, channel: dict[str, Any], user: str, reply_to: Any) -> dict[str, Any] | None:
        with self.lock:
            thread = list(self.threads.get((channel["id"], user), []))
        ours = [record for record in thread if record["direction"] == "out" and record.get("id")]
        if reply_to:
            return next((record for record in thread if record.get("id") == reply_to), None)
        return ours[-1] if ours else None

    def _compose(
        self,
        channel: dict[str, Any],
        user: str,
        body: dict[str, Any],
        text: str,
        parent: dict[str, Any] | None,
        attachment: bool,
    ) -> EmailMessage:
        message = EmailMessage()
        message["From"] = formataddr((str(body.get("name") or ""), user))
        message["To"] = formataddr((channel.get("name") or "", channel["address"]))
        message["Subject"] = str(body.get("subject") or "") or _answer_subject(parent)
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = make_msgid(domain=user.rpartition("@")[2])
        if parent is not None:
            headers = parent.get("headers") or {}
            message["In-Reply-To"] = f"<{parent['id']}>"
            message["References"] = " ".join([*headers.get("References", "").split(), f"<{parent['id']}>"]).strip()
        message.set_content((text or "") + _quoted_text(channel, parent))
        if body.get("html") or parent is not None:
            reply_html = str(body.get("html") or "") or f"<div>{html.escape(text).replace(chr(10), '<br>')}</div>"
            message.add_alternative(reply_html + _quoted_html(channel, parent), subtype="html")
        if attachment:
            sample = sample_for("document")
            maintype, subtype = sample.mime_type.split("/")
            message.add_attachment(sample.data, maintype=maintype, subtype=subtype, filename=sample.filename)
        return message

    def _inbound(self, request: Request) -> Response:
        # Threads are keyed by the customer's address as Parley's mail reaches it: lower-case.
        body = request.json_object()  # the request's parsed body, which the base class reads again
        if isinstance(body.get("user"), str):
            body["user"] = address_of(body["user"]) or body["user"].strip().lower()
        return super()._inbound(request)

    # Delivery to Parley ----------------------------------------------------------------------

    def _deliver(self, channel: dict[str, Any], record: dict[str, Any]) -> None:
        if channel.get("mode") != "imap":
            super()._deliver(channel, record)
            return
        with self.lock:
            raw = self.raw_mail[record["id"]]
        self.mailbox(channel["address"]).append(raw)
        with self.lock:
            record["attempts"] = 1  # in the mailbox: Parley takes it from there when it polls
            record["parley_status"] = None

    def webhook(self, channel: dict[str, Any], record: dict[str, Any]) -> tuple[str, bytes, dict[str, str]]:
        with self.lock:
            raw = self.raw_mail[record["id"]]
        envelope = {"to": [channel["address"]], "from": record["user"]}
        fields, files = (raw_form if channel.get("send_raw") else parsed_form)(raw, envelope)
        body, content_type = multipart_form(fields, files)
        return channel["webhook_url"], body, {"Content-Type": content_type, "User-Agent": "Sendlib/1.0"}

    def sign(self, channel: dict[str, Any], raw: bytes, mode: str) -> tuple[str, dict[str, str]]:
        """The secret is in the URL: a good post keeps it, a bad one carries another, none none."""
        url = channel.get("webhook_url") or ""
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "key"]
        if mode == "good":
            query = parse_qsl(parts.query, keep_blank_values=True)
        elif mode == "bad":
            query.append(("key", "wrong-" + secrets.token_urlsafe(8)))
        url = urlunsplit(parts._replace(query=urlencode(query)))
        return url, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "User-Agent": "Sendlib/1.0"}

    # Control verbs ---------------------------------------------------------------------------

    def control_verbs(self):
        return {
            **super().control_verbs(),
            ("GET", "mail/servers"): lambda request: json_response(self.servers()),
            ("GET", "settings"): self._settings,
            ("POST", "settings"): self._update_settings,
            ("GET", "mailbox"): self._mailbox,
        }

    def _settings(self, request: Request) -> Response:
        with self.lock:
            return json_response({"bouncing": sorted(self.bouncing)})

    def _update_settings(self, request: Request) -> Response:
        body = request.json_object()
        unknown = set(body) - {"kind", "bouncing"}
        if unknown:
            raise ControlError(f"unknown settings {sorted(unknown)}; known: ['bouncing']")
        if "bouncing" in body:
            if not isinstance(body["bouncing"], list):
                raise ControlError("bouncing is a list of addresses")
            with self.lock:
                self.bouncing = {address_of(str(a)) or str(a).lower() for a in body["bouncing"]}
        return self._settings(request)

    def _mailbox(self, request: Request) -> Response:
        channel = self.require_channel(request.query)
        box = self.mailbox(channel["address"])
        with self.lock:
            listed = [
                {"uid": mail.uid, "flags": sorted(mail.flags), "size": len(mail.raw), **_summary(mail.raw)}
                for mail in box.messages
            ]
        return json_response(listed)


# Wire formats ------------------------------------------------------------------------------

BOUNDARY = "xYzZY"  # what SendGrid's Inbound Parse uses (seen in its posts), kept for fidelity


def parsed_form(raw: bytes, envelope: dict[str, Any]) -> tuple[list[tuple[str, str]], list[tuple]]:
    """SendGrid Inbound Parse's default post ("Default Parameters" in its docs): the raw header
    block, the decoded bodies, and each attachment as a file `attachmentN` described in
    `attachment-info` (and, for inline ones, `content-ids`)."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    attachments = [p for p in message.iter_attachments() if p is not text_part and p is not html_part]
    info, content_ids, files = {}, {}, []
    for number, part in enumerate(attachments, start=1):
        name, filename, mime_type = f"attachment{number}", part.get_filename() or "", part.get_content_type()
        described = {"filename": filename, "name": filename, "type": mime_type}
        if part.get("Content-ID"):
            described["content-id"] = str(part["Content-ID"]).strip("<>")
            content_ids[described["content-id"]] = name
        info[name] = described
        files.append((name, filename or name, mime_type, part.get_payload(decode=True) or b""))
    header_block = "".join(f"{name}: {value}\n" for name, value in message.raw_items())
    fields = [("headers", header_block), ("dkim", f"{{@{envelope['from'].rpartition('@')[2]} : pass}}")]
    if content_ids:
        fields.append(("content-ids", json.dumps(content_ids)))
    fields.append(("to", str(message.get("To") or "")))
    if html_part is not None:
        fields.append(("html", html_part.get_content()))
    fields.append(("from", str(message.get("From") or "")))
    if text_part is not None:
        fields.append(("text", text_part.get_content()))
    fields += [("sender_ip", "127.0.0.1"), ("envelope", json.dumps(envelope)), ("attachments", str(len(files)))]
    fields.append(("subject", str(message.get("Subject") or "")))
    if info:
        fields.append(("attachment-info", json.dumps(info)))
    charsets = {key: "UTF-8" for key in ("to", "html", "subject", "from", "text")}
    fields += [("charsets", json.dumps(charsets)), ("SPF", "pass")]
    return fields, files


def raw_form(raw: bytes, envelope: dict[str, Any]) -> tuple[list[tuple[str, Any]], list[tuple]]:
    """SendGrid's "Send Raw" post: the whole MIME message in `email`."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    fields = [
        ("dkim", f"{{@{envelope['from'].rpartition('@')[2]} : pass}}"),
        ("email", raw),
        ("to", str(message.get("To") or "")),
        ("from", str(message.get("From") or "")),
        ("subject", str(message.get("Subject") or "")),
        ("sender_ip", "127.0.0.1"),
        ("envelope", json.dumps(envelope)),
        ("charsets", json.dumps({"to": "UTF-8", "subject": "UTF-8", "from": "UTF-8"})),
        ("SPF", "pass"),
    ]
    return fields, []


def multipart_form(fields: list[tuple[str, Any]], files: list[tuple]) -> tuple[bytes, str]:
    """multipart/form-data as a browser (and SendGrid) writes it: text fields without a
    Content-Type, files with a filename and theirs."""
    contents = [value if isinstance(value, bytes) else str(value).encode() for _, value in fields]
    contents += [file[3] for file in files]
    boundary = BOUNDARY if not any(BOUNDARY.encode() in c for c in contents) else secrets.token_hex(16)
    out = bytearray()
    for (name, _), content in zip(fields, contents, strict=False):
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += content + b"\r\n"
    for name, filename, mime_type, content in files:
        safe = filename.replace('"', "%22").replace("\r", " ").replace("\n", " ")
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'.encode()
        out += f"Content-Type: {mime_type}\r\n\r\n".encode() + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


# Small helpers -----------------------------------------------------------------------------


def _answer_subject(parent: dict[str, Any] | None) -> str:
    if parent is None:
        return "Question about my order"
    subject = re.sub(r"^\s*(re\s*:\s*)+", "", parent.get("subject") or "", flags=re.IGNORECASE)
    return f"Re: {subject}" if subject else "Re: your message"


def _quoted_text(channel: dict[str, Any], parent: dict[str, Any] | None) -> str:
    """The history under the reply, as Gmail writes it."""
    if parent is None:
        return "\n"
    moment = time.localtime(parent.get("time") or time.time())
    hour = moment.tm_hour % 12 or 12
    when = f"{time.strftime('%a, %b', moment)} {moment.tm_mday}, {moment.tm_year} at {hour}:{moment.tm_min:02d} "
    when += "AM" if moment.tm_hour < 12 else "PM"
    sender = formataddr((channel.get("name") or "", channel["address"]))
    quoted = "\n".join(f"> {line}" if line else ">" for line in (parent.get("text") or "").splitlines())
    return f"\n\nOn {when} {sender} wrote:\n\n{quoted}\n"


def _quoted_html(channel: dict[str, Any], parent: dict[str, Any] | None) -> str:
    if parent is None:
        return ""
    sender = html.escape(formataddr((channel.get("name") or "", channel["address"])))
    quoted = html.escape(parent.get("text") or "").replace("\n", "<br>")
    return (
        f'<br><div class="gmail_quote"><div class="gmail_attr">On a recent day {sender} wrote:</div>'
        f'<blockquote class="gmail_quote">{quoted}</blockquote></div>'
    )


def _menu(text: str) -> list[dict[str, str]]:
    """A numbered menu in Parley's mail, offered on the page as buttons that answer its number."""
    if MENU_HEADING not in text:
        return []
    menu = text.split(MENU_HEADING, 1)[1]
    return [
        {"id": number, "title": title.strip()} for number, title in re.findall(r"^(\d{1,2})\.\s+(.+)$", menu, re.M)
    ]


def _summary(raw: bytes) -> dict[str, str]:
    headers = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
    return {
        "message_id": str(headers.get("Message-ID") or "").strip("<>"),
        "subject": str(headers.get("Subject") or ""),
    }


def _fault_text(body: bytes) -> str:
    try:
        value = json.loads(body)
    except ValueError:
        value = body.decode("utf-8", "replace")
    if isinstance(value, dict):
        value = value.get("message") or ""
    return str(value or "simulated failure")
