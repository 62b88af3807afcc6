"""Builders for inbound email as providers deliver it: real MIME messages (as a mail client
writes them) and SendGrid Inbound Parse posts, in its default and "Send Raw" shapes (field names
and the `attachment-info` / `charsets` / `envelope` JSON as its "Default Parameters" and "Raw
Parameters" tables document; boundary `xYzZY`, as its posts use)."""

import json
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, formatdate

from django.test import Client

from apps.connectors.models import Channel

ADDRESS = "help@shop.example"
BOUNDARY = "xYzZY"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde"


def make_email_channel(workspace, **settings) -> Channel:
    return Channel.objects.create(
        workspace=workspace,
        kind="email",
        name="Support mail",
        credentials={"smtp_password": "smtp-secret", "imap_password": "imap-secret"},
        settings={
            "address": ADDRESS,
            "from_name": "Nile Basket",
            "smtp_host": "127.0.0.1",
            "smtp_port": 9,
            "smtp_security": "none",
            **settings,
        },
    )


def mime(
    text: str | None = "Where is my order?",
    *,
    message_id: str = "CAN_P_JMvV7ZpAQ@mail.gmail.com",
    sender: str = "amira@example.com",
    name: str = "Amira Said",
    subject: str = "Order #1001",
    html: str | None = None,
    in_reply_to: str = "",
    references: tuple = (),
    files: tuple = (),
    headers: dict | None = None,
) -> bytes:
    """A customer's mail as their client sends it; `files` are (filename, mime type, bytes,
    content id or "")."""
    message = EmailMessage()
    message["From"] = formataddr((name, sender))
    message["To"] = formataddr(("Nile Basket", ADDRESS))
    message["Subject"] = subject
    message["Date"] = formatdate()
    if message_id:
        message["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        message["In-Reply-To"] = f"<{in_reply_to}>"
        message["References"] = " ".join(f"<{i}>" for i in (*references, in_reply_to))
    for header, value in (headers or {}).items():
        message[header] = value
    if text is not None:
        message.set_content(text)
    if html is not None:
        if text is None:
            message.set_content(html, subtype="html")
        else:
            message.add_alternative(html, subtype="html")
    for filename, mime_type, content, content_id in files:
        maintype, subtype = mime_type.split("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
        if content_id:
            list(message.iter_attachments())[-1]["Content-ID"] = f"<{content_id}>"
    return message.as_bytes(policy=policy.SMTP)


def form(fields: list, files: list = ()) -> tuple[bytes, str]:
    """multipart/form-data: text fields bare, files with a filename and a Content-Type."""
    out = bytearray()
    for name, value in fields:
        content = value if isinstance(value, bytes) else str(value).encode()
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + content + b"\r\n"
    for name, filename, mime_type, content in files:
        out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode()
        out += f"Content-Type: {mime_type}\r\n\r\n".encode() + content + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={BOUNDARY}"


def inbound_parse(raw: bytes) -> tuple[bytes, str]:
    """SendGrid's default post of a MIME message: headers as one block, decoded bodies,
    attachments as files described by attachment-info."""
    from email.parser import BytesParser

    message = BytesParser(policy=policy.default).parsebytes(raw)
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    files, info, content_ids = [], {}, {}
    for number, part in enumerate(message.iter_attachments(), start=1):
        key = f"attachment{number}"
        info[key] = {"filename": part.get_filename(), "name": part.get_filename(), "type": part.get_content_type()}
        if part["Content-ID"]:
            info[key]["content-id"] = content_ids_key = str(part["Content-ID"]).strip("<>")
            content_ids[content_ids_key] = key
        files.append((key, part.get_filename() or key, part.get_content_type(), _content(part)))
    sender = str(message["From"])
    fields = [
        ("headers", "".join(f"{name}: {value}\n" for name, value in message.raw_items())),
        ("dkim", "{@example.com : pass}"),
        *([("content-ids", json.dumps(content_ids))] if content_ids else []),
        ("to", str(message["To"])),
        *([("html", html.get_content())] if html is not None else []),
        ("from", sender),
        *([("text", text.get_content())] if text is not None and text.get_content_subtype() == "plain" else []),
        ("sender_ip", "209.85.223.169"),
        ("envelope", json.dumps({"to": [ADDRESS], "from": sender})),
        ("attachments", str(len(files))),
        ("subject", str(message["Subject"])),
        *([("attachment-info", json.dumps(info))] if info else []),
        (
            "charsets",
            json.dumps({"to": "UTF-8", "html": "UTF-8", "subject": "UTF-8", "from": "UTF-8", "text": "UTF-8"}),
        ),
        ("SPF", "pass"),
    ]
    return form(fields, files)


def _content(part) -> bytes:
    if part.is_multipart():  # a delivery-status report: its header blocks, as sent
        return part.as_bytes().split(b"\n\n", 1)[1]
    return part.get_payload(decode=True)


def inbound_parse_raw(raw: bytes) -> tuple[bytes, str]:
    """SendGrid's "Send Raw" post: the whole message in `email`."""
    fields = [
        ("dkim", "{@example.com : pass}"),
        ("email", raw),
        ("to", ADDRESS),
        ("from", "Amira Said <amira@example.com>"),
        ("subject", "Order #1001"),
        ("sender_ip", "209.85.223.169"),
        ("envelope", json.dumps({"to": [ADDRESS], "from": "amira@example.com"})),
        ("charsets", json.dumps({"to": "UTF-8", "subject": "UTF-8", "from": "UTF-8"})),
        ("SPF", "pass"),
    ]
    return form(fields)


def post(channel: Channel, body: bytes, content_type: str, *, key: str | None = None, **extra):
    """Posts to the channel's inbound-parse URL, `?key=` its verify token unless told otherwise."""
    key = channel.verify_token if key is None else key
    url = f"/webhooks/{channel.uuid}/" + (f"?key={key}" if key else "")
    return Client().post(url, body, content_type=content_type, **extra)
