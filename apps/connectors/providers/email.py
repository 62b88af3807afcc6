"""Email: a support address customers write to, read by webhook or IMAP, answered over SMTP.

Credentials: smtp_password, imap_password.
Settings: address (the support address, help@shop.example), from_name, smtp_host, smtp_port,
smtp_username, smtp_security (none | starttls | ssl); for IMAP polling also imap_host, imap_port,
imap_username, imap_security, imap_folder (INBOX).

Mail comes in two ways, both ending in `parse`:
- an inbound-parse webhook (SendGrid Inbound Parse's multipart form, its "Send Raw" variant whose
  `email` field is the whole MIME message, or a bare `message/rfc822` POST from a self-hosted MTA),
  authenticated by `?key=<verify token>` in the URL or HTTP Basic auth with that token as password;
- IMAP polling (`poll`), which stores each unseen message as `message/rfc822`.

One email is one InboundMessage whose provider id is its Message-ID, so a redelivery, a second
poll after a crash or the same mail by both ways is stored once. The shown text is the reply
alone (quoted history and signatures cut); the sanitised HTML and the headers that thread a
conversation go in the payload. Attachments are written to our storage at parse time (the
provider keeps nothing to download later), under a path named by their content, so parsing the
same mail twice writes nothing new.
"""

import contextlib
import hashlib
import hmac
import imaplib
import json
import re
import smtplib
import ssl
from base64 import b64decode
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.errors import MessageError
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formataddr, getaddresses, make_msgid, parsedate_to_datetime
from html import escape
from html.parser import HTMLParser

import httpx
import nh3
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.mail import EmailMultiAlternatives, get_connection
from email_reply_parser import EmailReplyParser

from apps.connectors.base import (
    HTTP_TIMEOUT,
    Connector,
    ErrorClass,
    InboundMessage,
    MediaFile,
    OutboundMessage,
    ParseError,
    ProviderError,
    ReachabilityUpdate,
    SendResult,
    StatusUpdate,
    network_error,
    stored_media,
)
from apps.core import netguard

MB = 1024 * 1024
FILE_LIMIT = 25 * MB  # what Gmail and Outlook accept per message; larger mail bounces there anyway
NETWORK_TIMEOUT = 10
POLL_CAP = 200  # messages per poll: a backlog drains over several beats instead of one long task
HTML_LIMIT = 100_000  # characters of sanitised HTML kept; it travels in every inbox event
SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
PROVIDER_ID_MAX = 191  # Message.provider_id

# RFC 3834 says automatic mail must not be answered; answering an out-of-office with a bot's
# greeting is how two robots end up mailing each other forever. Precedence is the older
# convention (Exchange, procmail vacation); "list" is left out on purpose: a support address
# that is a Google Group receives every customer's mail with "Precedence: list".
AUTOMATIC_PRECEDENCE = {"bulk", "auto_reply", "junk"}
DAEMON_SENDERS = re.compile(r"^(mailer-daemon|postmaster)@", re.IGNORECASE)

# Where the quoted history of a reply begins, as mail clients write it. Gmail wraps a long
# "On … wrote:" over two lines, so that one may span a line break (but not a blank line).
QUOTE_STARTS = [
    re.compile(r"^On\s(?:(?!\n\s*\n).){0,400}?\swrote:[ \t]*$", re.MULTILINE | re.DOTALL),
    re.compile(r"^Le\s(?:(?!\n\s*\n).){0,400}?\sa écrit\s?:[ \t]*$", re.MULTILINE | re.DOTALL),
    re.compile(r"^Am\s(?:(?!\n\s*\n).){0,400}?\sschrieb\s.{0,200}?:[ \t]*$", re.MULTILINE | re.DOTALL),
    re.compile(r"^-{2,}\s*Original Message\s*-{2,}", re.MULTILINE | re.IGNORECASE),
    re.compile(r"^_{20,}[ \t]*$", re.MULTILINE),  # Outlook's rule above its From:/Sent: block
    re.compile(r"^\*?From:\*?\s.+\n\*?(?:Sent|Date):\*?\s", re.MULTILINE),
    re.compile(r"^-- ?$", re.MULTILINE),  # RFC 3676's signature separator
]


# Reading mail ------------------------------------------------------------------------------


@dataclass
class _File:
    filename: str
    mime_type: str
    content: bytes
    content_id: str = ""


@dataclass
class _Mail:
    """One email, whichever way it came: its headers, its two bodies and its files."""

    headers: EmailMessage
    text: str = ""
    html: str = ""
    files: list[_File] = field(default_factory=list)
    raw: bytes = b""
    # Parts that describe a bounce (delivery-status, the returned message's headers), as text.
    report: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)


def _parse_bytes(raw: bytes) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(raw)


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError, MessageError):  # a header the policy cannot read: as sent
        value = next((raw for key, raw in message.raw_items() if key.lower() == name.lower()), "")
    return " ".join(str(value or "").split())


def _addresses(value: str) -> list[tuple[str, str]]:
    return [(name, address.lower()) for name, address in getaddresses([value]) if "@" in address]


def _text_of(part: EmailMessage) -> str:
    if part.get_content_charset() is None:  # undeclared (the default is ASCII): clients mean UTF-8
        return (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
    try:
        return part.get_content()
    except (LookupError, UnicodeError, AssertionError):  # an unknown or lying charset
        return (part.get_payload(decode=True) or b"").decode("utf-8", "replace")


def _mail_from_mime(raw: bytes) -> _Mail:
    message = _parse_bytes(raw)
    if not _header(message, "From"):
        raise ParseError("not an email: no From header")
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    mail = _Mail(
        headers=message,
        text=_text_of(text_part) if text_part is not None else "",
        html=_text_of(html_part) if html_part is not None else "",
        raw=raw,
    )
    for part in _leaves(message):
        if part is text_part or part is html_part:
            continue
        if part.get_content_type() in ("message/delivery-status", "text/rfc822-headers", "message/rfc822"):
            mail.report += part.as_bytes().decode("utf-8", "replace") + "\n"
        if part.get_content_type() != "message/delivery-status":
            mail.files.append(_file_of(part, len(mail.files) + 1))
    mail.to = [address for _, address in _addresses(_header(message, "To"))]
    mail.cc = [address for _, address in _addresses(_header(message, "Cc"))]
    return mail


def _leaves(message: EmailMessage):
    """Every part that is not a container; a forwarded message stays whole, as one file."""
    if message.is_multipart() and message.get_content_maintype() == "multipart":
        for part in message.iter_parts():
            yield from _leaves(part)
    elif message.get_content_maintype() != "multipart":
        yield message


def _file_of(part: EmailMessage, number: int) -> _File:
    mime_type = part.get_content_type()
    if mime_type == "message/rfc822":
        inner = part.get_payload()
        content = inner[0].as_bytes() if isinstance(inner, list) and inner else part.as_bytes()
        filename = part.get_filename() or f"message-{number}.eml"
    else:
        content = part.get_payload(decode=True) or b""
        filename = part.get_filename() or f"part-{number}"
    return _File(filename, mime_type, content, part.get("Content-ID", "").strip().strip("<>"))


def _form_fields(raw_body: bytes, content_type: str) -> dict[str, EmailMessage]:
    """multipart/form-data read with the email parser: it is MIME, and Django's request
    machinery needs a request, not stored bytes."""
    form = _parse_bytes(f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace") + raw_body)
    if not form.is_multipart():
        raise ParseError("multipart/form-data without parts (no boundary?)")
    fields = {}
    for part in form.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = part
    return fields


def _part_bytes(part: EmailMessage) -> bytes:
    """A form part's bytes. The email parser reads a part typed message/* (a forwarded mail, a
    delivery report) as a message of its own, so that one is written back out, minus the
    part's own headers."""
    if part.is_multipart():
        return re.split(rb"\r?\n\r?\n", part.as_bytes(), maxsplit=1)[-1]
    return part.get_payload(decode=True) or b""


def _field_bytes(fields: dict, name: str) -> bytes:
    part = fields.get(name)
    return _part_bytes(part) if part is not None else b""


def _field_text(fields: dict, name: str, charset: str = "utf-8") -> str:
    try:
        return _field_bytes(fields, name).decode(charset or "utf-8", "replace")
    except LookupError:
        return _field_bytes(fields, name).decode("utf-8", "replace")


def _json_field(fields: dict, name: str) -> dict:
    try:
        value = json.loads(_field_text(fields, name) or "{}")
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _mail_from_form(fields: dict) -> _Mail:
    """SendGrid's default (parsed) shape: `headers` is the raw header block; `text` and `html`
    come decoded in the charsets `charsets` names (their docs: "Character Sets and Header
    Decoding"); files are `attachment1..N`, described by the JSON in `attachment-info`."""
    headers = _parse_bytes(_field_bytes(fields, "headers").strip() + b"\r\n\r\n")
    if not _header(headers, "From") and fields.get("from") is not None:
        headers["From"] = " ".join(_field_text(fields, "from").split())
    if not _header(headers, "From"):
        raise ParseError("inbound parse post without a sender (no headers/from)")
    charsets = _json_field(fields, "charsets")
    if fields.get("subject") is not None:  # decoded by SendGrid; the header block may be encoded
        del headers["Subject"]
        headers["Subject"] = " ".join(_field_text(fields, "subject", charsets.get("subject", "utf-8")).split())
    mail = _Mail(
        headers=headers,
        text=_field_text(fields, "text", charsets.get("text", "utf-8")),
        html=_field_text(fields, "html", charsets.get("html", "utf-8")),
        raw=b"".join(_field_bytes(fields, name) for name in ("headers", "text", "html")),
    )
    info = _json_field(fields, "attachment-info")
    for name in sorted((n for n in fields if re.fullmatch(r"attachment\d+", n)), key=lambda n: int(n[10:])):
        part, described = fields[name], info.get(name) or {}
        described = described if isinstance(described, dict) else {}
        file = _File(
            filename=described.get("filename") or part.get_filename() or name,
            mime_type=described.get("type") or part.get_content_type(),
            content=_part_bytes(part),
            content_id=str(described.get("content-id") or ""),
        )
        if file.mime_type in ("message/delivery-status", "text/rfc822-headers", "message/rfc822"):
            mail.report += file.content.decode("utf-8", "replace") + "\n"
        if file.mime_type != "message/delivery-status":
            mail.files.append(file)
    for target, name in ((mail.to, "to"), (mail.cc, "cc")):
        value = _field_text(fields, name, charsets.get(name, "utf-8")) or _header(headers, name)
        target.extend(address for _, address in _addresses(value))
    return mail


# Shown text and HTML -----------------------------------------------------------------------


class _TextOfHtml(HTMLParser):
    """The words of an HTML mail, without what the reader never sees or what is quoted."""

    HIDDEN = {"script", "style", "head", "title", "template"}
    QUOTES = {"gmail_quote", "yahoo_quoted", "moz-cite-prefix"}
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr"}
    VOID = {"br", "img", "hr", "meta", "input", "link", "wbr", "col", "area", "base", "source"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0  # open elements inside something skipped

    def handle_starttag(self, tag, attrs):
        if self.skipping:
            self.skipping += tag not in self.VOID
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in self.HIDDEN or tag == "blockquote" or classes & self.QUOTES:
            self.skipping = 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if self.skipping:
            self.skipping -= tag not in self.VOID
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        lines = (line.strip() for line in "".join(self.parts).splitlines())
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    return parser.text()


def visible_reply(text: str) -> str:
    """What the customer wrote this time: the text above the quoted history, without the
    signature. EmailReplyParser knows "> " quotes and signatures; the client headers that start
    a quote ("On … wrote:", Outlook's From:/Sent: block) are cut here first, since it misses
    them when they wrap or carry no "> " lines below."""
    text = text.replace("\r\n", "\n").strip()
    cut = min((m.start() for pattern in QUOTE_STARTS if (m := pattern.search(text))), default=len(text))
    reply = EmailReplyParser.parse_reply(text[:cut]).strip()
    # Nothing above the quote: the customer wrote below it (bottom-posting) or only quoted.
    return reply or EmailReplyParser.parse_reply(text).strip() or text


def _img_src(element: str, attribute: str, value: str) -> str | None:
    """Keep pictures the mail carries (cid:, data:image), drop remote ones: a remote image is a
    read receipt and an IP leak for whoever sent it (tracking pixels), and it would load in the
    operator's browser unasked. Links keep http(s) and mailto, never data: or cid:."""
    lowered = value.strip().lower()
    if element == "img" and attribute == "src":
        return value if lowered.startswith(("cid:", "data:image/")) else None
    if attribute in ("href", "src") and lowered.startswith(("data:", "cid:")):
        return None
    return value


def sanitise_html(html: str) -> str:
    schemes = nh3.ALLOWED_URL_SCHEMES | {"cid", "data"}
    cleaned = nh3.clean(html, url_schemes=schemes, attribute_filter=_img_src, url_relative="deny")
    if len(cleaned) > HTML_LIMIT:  # cut, then cleaned again so every tag is closed
        cleaned = nh3.clean(cleaned[:HTML_LIMIT], url_schemes=schemes, attribute_filter=_img_src, url_relative="deny")
    return cleaned


# Files -------------------------------------------------------------------------------------


def _safe_filename(name: str) -> str:
    stem = re.sub(r"[^\w.\-]+", "_", (name or "").strip())[-100:].lstrip("._") or "file"
    return stem


def _store_file(channel, file: _File) -> dict:
    """Same bytes → same path: parsing the same mail again writes nothing and points to the
    same file."""
    digest = hashlib.sha256(file.content).hexdigest()
    path = f"email/{channel.id}/{digest}/{_safe_filename(file.filename)}"
    if not default_storage.exists(path):
        saved = default_storage.save(path, ContentFile(file.content))
        path = saved  # the storage may have cleaned the name further
    media = {"id": path, "mime_type": file.mime_type, "filename": file.filename, "sha256": digest}
    if file.content_id:
        media["content_id"] = file.content_id
    return media


# Threading headers -------------------------------------------------------------------------


def message_ids(value: str) -> list[str]:
    """The ids in a Message-ID, In-Reply-To or References header, without angle brackets."""
    found = re.findall(r"<([^<>\s]+)>", value or "")
    return found or [token for token in (value or "").split() if "@" in token]


def provider_id_for(message_id: str) -> str:
    """Message-IDs have no length limit; our column has. A long one is kept by its hash, the
    same here and wherever it is looked up (thread ids)."""
    if len(message_id) <= PROVIDER_ID_MAX:
        return message_id
    return hashlib.sha256(message_id.encode()).hexdigest()


def _timestamp(value: str) -> datetime:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return datetime.now(tz=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# Sending -----------------------------------------------------------------------------------

REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|antw)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
ENHANCED_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def reply_subject(subject: str, from_name: str) -> str:
    """One "Re:" however many the customer's client stacked up; a first mail gets a subject
    of its own."""
    stripped = REPLY_PREFIX.sub("", subject or "").strip()
    if not stripped:
        return f"Message from {from_name}"
    return f"Re: {stripped}"


def numbered_menu(options: list[dict]) -> str:
    lines = ["Reply with a number:"]
    for number, option in enumerate(options, start=1):
        description = f" — {option['description']}" if option.get("description") else ""
        lines.append(f"{number}. {option['title']}{description}")
    return "\n".join(lines)


def smtp_error(error: Exception) -> ProviderError:
    """An SMTP client error as Parley should treat it. Order matters: the authentication and
    refusal errors are SMTPResponseExceptions too."""
    if isinstance(error, smtplib.SMTPAuthenticationError):
        said = _said(error.smtp_error)
        return ProviderError(ErrorClass.CREDENTIALS, _reply_label(error.smtp_code, said), said)
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, said = next(iter(error.recipients.values()), (550, b"recipient refused"))
        return _by_reply_code(code, _said(said), at_recipient=True)
    if isinstance(error, smtplib.SMTPSenderRefused) and error.smtp_code >= 500:
        # Our own From address refused (not allowed for this login, unknown domain): settings.
        said = _said(error.smtp_error)
        return ProviderError(ErrorClass.CREDENTIALS, _reply_label(error.smtp_code, said), f"Sender refused: {said}")
    if isinstance(error, smtplib.SMTPResponseException):
        return _by_reply_code(error.smtp_code, _said(error.smtp_error))
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return ProviderError(ErrorClass.CREDENTIALS, "auth_unsupported", f"The SMTP server refuses: {error}")
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return ProviderError(ErrorClass.RETRY, "disconnected", str(error) or "the SMTP server hung up")
    if isinstance(error, ssl.SSLError):  # a wrong smtp_security or port: retrying will not help
        return ProviderError(ErrorClass.CREDENTIALS, "tls", f"TLS with the SMTP server failed: {error}")
    if isinstance(error, OSError):  # refused, unreachable, timed out (socket.timeout), DNS
        return network_error(error)
    return ProviderError(ErrorClass.FATAL, "smtp", str(error) or type(error).__name__)


def _said(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _reply_label(code: int, said: str) -> str:
    """`550 5.1.1`: the reply code and, when the server gave one, the enhanced status code."""
    enhanced = ENHANCED_STATUS.match(said)
    return f"{code} {'.'.join(enhanced.groups())}" if enhanced else str(code)


def _by_reply_code(code: int, said: str, *, at_recipient: bool = False) -> ProviderError:
    """RFC 5321 reply codes with RFC 3463 enhanced status codes: 4xx is transient; 5.1.x is a bad
    mailbox (5.1.1 user unknown, 5.1.2 bad domain), 5.2.1 a disabled one; 530/534/535 want a
    (better) login; other 5xx (policy, size, content) will fail the same way again."""
    label = _reply_label(code, said)
    status = label.partition(" ")[2]
    if 400 <= code < 500:
        return ProviderError(ErrorClass.RETRY, label, said)
    if code in (530, 534, 535):
        return ProviderError(ErrorClass.CREDENTIALS, label, said)
    bad_mailbox = status.startswith("5.1.") or status == "5.2.1"
    if bad_mailbox or (at_recipient and not status and code in (550, 551, 553)):
        return ProviderError(ErrorClass.STOP_RECIPIENT, label, said)
    return ProviderError(ErrorClass.FATAL, label, said)


# The connector -----------------------------------------------------------------------------


class EmailConnector(Connector):
    kind = "email"
    reply_window_hours = None  # mail may always be answered
    numbered_menus = True
    wants_last_inbound = True
    size_limits = dict.fromkeys(("image", "video", "audio", "document"), FILE_LIMIT)
    max_webhook_bytes = 30 * MB  # 25 MB of files grows by a third in base64 on the way in
    polls = True  # only channels with settings.imap_host have anything to poll

    # Requests -----------------------------------------------------------------------------

    def address_of(self, contact) -> str:
        return (contact.email or "").lower()  # an address that never wrote can still be written to

    def verify(self, channel, raw_body: bytes, headers, query=None) -> bool:
        """The inbound-parse URL carries the channel's secret (`?key=`), or the provider sends it
        as the Basic-auth password (SendGrid allows `https://user:secret@host/...`)."""
        expected = channel.verify_token or ""
        given = (query or {}).get("key", "") or _basic_password(headers.get("Authorization", ""))
        return bool(expected and given) and hmac.compare_digest(given.encode(), expected.encode())

    # Parsing ------------------------------------------------------------------------------

    def parse(self, channel, raw_body: bytes, headers=None) -> list:
        mail = self._mail(raw_body, (headers or {}).get("Content-Type", ""))
        address = (channel.settings or {}).get("address", "").lower()
        if self._is_bounce(mail):
            return self._bounce_status(mail, address)
        if self._is_automatic(mail) or self._sender(mail)[1] == address:
            return []  # an out-of-office, or our own mail come back (a copy in the mailbox)
        return [self._message(channel, mail)]

    def _mail(self, raw_body: bytes, content_type: str) -> _Mail:
        kind = content_type.split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            fields = _form_fields(raw_body, content_type)
            if "email" in fields:  # "Send Raw": the whole MIME message in one field
                return _mail_from_mime(_field_bytes(fields, "email"))
            if "headers" in fields or "from" in fields:
                return _mail_from_form(fields)
            raise ParseError(f"an inbound-parse form without email or headers: {sorted(fields)}")
        if kind in ("message/rfc822", "text/plain", ""):
            return _mail_from_mime(raw_body)
        raise ParseError(f"not an email delivery: Content-Type {content_type!r}")

    def _sender(self, mail: _Mail) -> tuple[str, str]:
        found = _addresses(_header(mail.headers, "From"))
        if not found:
            raise ParseError(f"no sender address in From: {_header(mail.headers, 'From')!r}")
        return found[0]

    def _is_automatic(self, mail: _Mail) -> bool:
        """Out-of-office and other robots' mail, and reports that are not bounces (a read
        receipt, RFC 8098): none of it is the customer speaking."""
        headers = mail.headers
        submitted = _header(headers, "Auto-Submitted").lower()
        precedence = _header(headers, "Precedence").lower()
        return (
            (submitted not in ("", "no"))
            or precedence in AUTOMATIC_PRECEDENCE
            or bool(_header(headers, "X-Autoreply") or _header(headers, "X-Autorespond"))
            or _header(headers, "Content-Type").lower().startswith("multipart/report")
        )

    def _is_bounce(self, mail: _Mail) -> bool:
        content_type = _header(mail.headers, "Content-Type").lower()
        if content_type.startswith("multipart/report") and "delivery-status" in content_type:
            return True
        return bool(DAEMON_SENDERS.match(self._sender(mail)[1]))

    def _bounce_status(self, mail: _Mail, address: str) -> list:
        """A failed delivery of one of our mails marks it failed; anything else (a delay
        notice, a bounce of mail we never sent) is dropped. Ours are the ids we made on the
        address's domain (`send`), so no lookup is needed to tell."""
        report = mail.report or mail.text
        action = _report_field(report, "Action").lower()
        bounced = _report_field(report, "Message-ID")
        domain = address.rpartition("@")[2]
        if action not in ("", "failed") or not domain:
            return []
        bounced_id = next(iter(message_ids(bounced)), "")
        if not bounced_id.lower().endswith("@" + domain):
            return []
        status = _report_field(report, "Status")
        recipient = _report_field(report, "Final-Recipient").split(";")[-1].strip().lower()
        when = _timestamp(_header(mail.headers, "Date"))
        failed = StatusUpdate(
            provider_id=provider_id_for(bounced_id),
            state="failed",
            timestamp=when,
            recipient_id=recipient,
            error_code=f"bounce {status}".strip(),
            error_reason=_report_field(report, "Diagnostic-Code").split(";")[-1].strip()
            or "The recipient's mail server returned the message.",
        )
        # 5.1.x: no such mailbox or domain (RFC 3463). Nothing more should be queued to it.
        if status.startswith("5.1.") and recipient:
            return [failed, ReachabilityUpdate(sender_id=recipient, reachable=False, timestamp=when, reason=status)]
        return [failed]

    def _message(self, channel, mail: _Mail) -> InboundMessage:
        name, sender = self._sender(mail)
        headers = mail.headers
        message_id = next(iter(message_ids(_header(headers, "Message-ID"))), "")
        in_reply_to = next(iter(message_ids(_header(headers, "In-Reply-To"))), "")
        references = message_ids(_header(headers, "References"))
        text = mail.text or html_to_text(mail.html)
        shown = visible_reply(text) if text.strip() else ""
        subject = _header(headers, "Subject")
        media = [_store_file(channel, file) for file in mail.files]
        payload = {
            "subject": subject,
            "message_id": message_id,
            "in_reply_to": in_reply_to,
            "references": references,
            "to": mail.to,
            "cc": mail.cc,
            "html": sanitise_html(mail.html) if mail.html else "",
        }
        return InboundMessage(
            provider_id=provider_id_for(message_id) if message_id else hashlib.sha256(mail.raw).hexdigest(),
            sender_id=sender,
            sender_email=sender,
            sender_name=name,
            timestamp=_timestamp(_header(headers, "Date")),
            kind="media" if media else "text",
            # A mail with only a subject ("Where is my order?") says it there.
            text=shown or ("" if media else subject),
            payload=payload,
            media=media[0] if media else None,
            extra_media=tuple(media[1:]),
            reply_to_provider_id=provider_id_for(in_reply_to) if in_reply_to else "",
            thread_ids=tuple(provider_id_for(i) for i in dict.fromkeys([in_reply_to, *references]) if i),
        )

    # Polling ------------------------------------------------------------------------------

    def poll(self, channel, store) -> int:
        """Unseen mail of the IMAP folder, each stored before it is flagged \\Seen: a crash in
        between fetches it again, and the pipeline drops the duplicate by Message-ID."""
        if not (channel.settings or {}).get("imap_host"):
            return 0
        stored = 0
        with self._imap(channel) as imap:
            for uid in self._unseen(imap)[:POLL_CAP]:
                raw = self._fetch(imap, uid)
                if raw is None:
                    continue  # expunged meanwhile
                store(raw, {"Content-Type": "message/rfc822"})
                with _imap_errors("STORE"):
                    imap.uid("STORE", uid, "+FLAGS.SILENT", r"(\Seen)")
                stored += 1
        return stored

    @contextlib.contextmanager
    def _imap(self, channel):
        settings = channel.settings or {}
        security = settings.get("imap_security", "ssl")
        host = settings["imap_host"]
        port = int(settings.get("imap_port") or (993 if security == "ssl" else 143))
        with _imap_errors("CONNECT"):
            if security == "ssl":
                imap = imaplib.IMAP4_SSL(host, port, ssl_context=ssl.create_default_context(), timeout=NETWORK_TIMEOUT)
            else:
                imap = imaplib.IMAP4(host, port, timeout=NETWORK_TIMEOUT)
        try:
            with _imap_errors("LOGIN"):
                if security == "starttls":
                    imap.starttls(ssl.create_default_context())
                username = settings.get("imap_username") or settings.get("address", "")
                imap.login(username, (channel.credentials or {}).get("imap_password", ""))
            with _imap_errors("SELECT"):
                status, answer = imap.select(_imap_quote(settings.get("imap_folder") or "INBOX"))
                if status != "OK":
                    raise imaplib.IMAP4.error(_said(answer[0] if answer else b"cannot select the folder"))
            yield imap
        finally:
            with contextlib.suppress(Exception):  # the work is done; a failed goodbye changes nothing
                imap.logout()

    def _unseen(self, imap) -> list[bytes]:
        with _imap_errors("SEARCH"):
            status, data = imap.uid("SEARCH", None, "UNSEEN")
        if status != "OK":
            raise ProviderError(ErrorClass.RETRY, "imap_search", _said(data[0] if data else b""))
        return (data[0] or b"").split() if data else []

    def _fetch(self, imap, uid: bytes) -> bytes | None:
        with _imap_errors("FETCH"):
            status, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        if status != "OK":
            raise ProviderError(ErrorClass.RETRY, "imap_fetch", _said(data[0] if data else b""))
        return next((item[1] for item in data or [] if isinstance(item, tuple) and len(item) == 2), None)

    # Sending ------------------------------------------------------------------------------

    def send(self, channel, message: OutboundMessage) -> SendResult:
        mail, message_id = self._compose(channel, message)
        mail.connection = get_connection(SMTP_BACKEND, **self._smtp(channel))
        try:
            mail.send(fail_silently=False)
        except (smtplib.SMTPException, OSError) as error:
            raise smtp_error(error) from error
        return SendResult(provider_id=provider_id_for(message_id.strip("<>")))

    def _smtp(self, channel) -> dict:
        settings, credentials = channel.settings or {}, channel.credentials or {}
        security = settings.get("smtp_security", "starttls")
        password = credentials.get("smtp_password", "")
        default_port = {"ssl": 465, "starttls": 587}.get(security, 25)
        return {
            "host": settings.get("smtp_host", ""),
            "port": int(settings.get("smtp_port") or default_port),
            "username": settings.get("smtp_username") or (settings.get("address", "") if password else ""),
            "password": password,
            "use_tls": security == "starttls",
            "use_ssl": security == "ssl",
            "timeout": NETWORK_TIMEOUT,
        }

    def _compose(self, channel, message: OutboundMessage) -> tuple[EmailMultiAlternatives, str]:
        settings = channel.settings or {}
        address = settings.get("address", "")
        if "@" not in address or not settings.get("smtp_host"):
            raise ProviderError(ErrorClass.CREDENTIALS, "not_configured", "Set the channel's address and smtp_host.")
        from_name = settings.get("from_name") or channel.name
        message_id = make_msgid(domain=address.rpartition("@")[2])
        text = self._text(message)
        mail = EmailMultiAlternatives(
            subject=reply_subject((message.context.get("last_inbound_payload") or {}).get("subject", ""), from_name),
            body=text,
            from_email=formataddr((from_name, address)),
            to=[message.recipient_id],
            headers={"Message-ID": message_id, **self._thread_headers(message)},
        )
        mail.attach_alternative(self._html(text), "text/html")
        if message.media:
            file = self._attachment(message.media)
            mail.attach(file.filename, file.content, file.mime_type)
        return mail, message_id

    def _thread_headers(self, message: OutboundMessage) -> dict:
        """In-Reply-To and References name the customer's last mail, so their client files the
        answer under the same thread. A mail that had no Message-ID (its provider id is a hash,
        no "@") has nothing to point to."""
        last = message.context.get("last_inbound_payload") or {}
        last_id = last.get("message_id") or message.context.get("last_inbound_id", "")
        headers = {}
        if "@" in last_id:
            chain = [*(last.get("references") or []), last_id][-20:]  # long threads: the newest
            headers.update({"In-Reply-To": f"<{last_id}>", "References": " ".join(f"<{i}>" for i in chain)})
        if message.context.get("sender_kind") in ("bot", "system"):
            headers["Auto-Submitted"] = "auto-replied"  # RFC 3834: autoresponders stay quiet
        return headers

    def _text(self, message: OutboundMessage) -> str:
        if message.kind == "reaction":
            raise ProviderError(ErrorClass.FATAL, "unsupported_kind", "Email has no reactions.")
        text = message.text or ""
        if message.kind == "interactive":
            text = f"{text}\n\n{numbered_menu(message.payload.get('options') or [])}".strip()
        if message.kind == "location":
            place = message.payload
            where = ", ".join(str(place[key]) for key in ("name", "address") if place.get(key))
            link = f"https://www.openstreetmap.org/?mlat={place.get('latitude')}&mlon={place.get('longitude')}"
            text = "\n".join(part for part in (text, where, link) if part)
        return text

    def _html(self, text: str) -> str:
        body = escape(text).replace("\n", "<br>\n")
        return f'<!doctype html><html><body><div style="font-family:sans-serif">{body}</div></body></html>'

    def _attachment(self, media: dict) -> MediaFile:
        mime_type = media.get("mime_type") or "application/octet-stream"
        filename = media.get("filename") or "attachment"
        if media.get("content") is not None:
            return MediaFile(content=media["content"], mime_type=mime_type, filename=filename)
        try:
            response = netguard.get(media.get("url", ""), timeout=HTTP_TIMEOUT, follow_redirects=True)
        except netguard.OutboundBlocked as error:
            raise ProviderError(ErrorClass.FATAL, "private_url", str(error)) from error
        except httpx.HTTPError as error:
            raise ProviderError(ErrorClass.RETRY, "media_download", str(error) or type(error).__name__) from error
        if not response.is_success:
            raise ProviderError(ErrorClass.FATAL, "media_download", f"the file's URL answered {response.status_code}")
        if len(response.content) > FILE_LIMIT:
            raise ProviderError(ErrorClass.FATAL, "too_large", "The file is larger than mail servers accept.")
        return MediaFile(content=response.content, mime_type=mime_type, filename=filename)

    # Media --------------------------------------------------------------------------------

    def fetch_media(self, channel, media: dict, max_bytes: int) -> MediaFile:
        """The files were written to our storage when the mail was parsed; take them from there."""
        return stored_media(
            media,
            max_bytes,
            under=f"email/{channel.id}/",
            missing_code="missing_file",
            missing="The mail's file is gone.",
        )


def _basic_password(authorization: str) -> str:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        return b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")[2]
    except (ValueError, UnicodeDecodeError):
        return ""


def _report_field(report: str, name: str) -> str:
    found = re.search(rf"^{re.escape(name)}:[ \t]*(.*(?:\n[ \t]+.*)*)", report, re.MULTILINE | re.IGNORECASE)
    return re.sub(r"\s+", " ", found.group(1)).strip() if found else ""


def _imap_quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def _imap_errors(step: str):
    """imaplib's errors as Parley should treat them: a refused LOGIN is the channel's
    credentials; a dropped or timed-out connection is worth another poll; anything else the
    server refuses (a folder that does not exist) will not fix itself."""
    try:
        yield
    except imaplib.IMAP4.abort as error:
        raise ProviderError(ErrorClass.RETRY, "imap_disconnected", f"{step}: {error}") from error
    except imaplib.IMAP4.error as error:
        error_class = ErrorClass.CREDENTIALS if step == "LOGIN" else ErrorClass.FATAL
        raise ProviderError(error_class, f"imap_{step.lower()}", f"{step}: {error}") from error
    except ssl.SSLError as error:
        raise ProviderError(ErrorClass.CREDENTIALS, "tls", f"TLS with the IMAP server failed: {error}") from error
    except OSError as error:  # refused, unreachable, timed out
        raise ProviderError(ErrorClass.RETRY, "network", f"{step}: {error or type(error).__name__}") from error
