"""Tiny SMTP and IMAP servers for the simulated email provider: just enough of RFC 5321 (ESMTP
with AUTH PLAIN/LOGIN) and RFC 3501 (IMAP4rev1: LOGIN, SELECT, UID SEARCH/FETCH/STORE) for
Parley's email connector, Python's smtplib and imaplib. Plain TCP on loopback, no TLS (there are
no certificates to trust here); standard library only.

The servers know nothing of channels: they ask their `MailHost` (the email provider) who may log
in, who may send, where mail goes and what a mailbox holds.
"""

from __future__ import annotations

import base64
import binascii
import re
import socketserver
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr
from typing import Protocol

MAX_MESSAGE_BYTES = 30 * 1024 * 1024
MAX_LINE = 8192
SYSTEM_FLAGS = (r"\Answered", r"\Flagged", r"\Deleted", r"\Seen", r"\Draft")


@dataclass
class StoredMail:
    uid: int
    raw: bytes
    flags: set[str] = field(default_factory=set)
    received: float = field(default_factory=time.time)


@dataclass
class Mailbox:
    """One account's INBOX. Guarded by the host's lock."""

    uid_validity: int = field(default_factory=lambda: int(time.time()))
    uid_next: int = 1
    messages: list[StoredMail] = field(default_factory=list)

    def append(self, raw: bytes, flags: set[str] | None = None) -> StoredMail:
        mail = StoredMail(self.uid_next, raw, set(flags or ()))
        self.uid_next += 1
        self.messages.append(mail)
        return mail


class MailHost(Protocol):
    lock: threading.RLock

    def smtp_login(self, username: str, password: str) -> bool: ...

    def smtp_sender(self, address: str, login: str | None) -> tuple[int, str] | None: ...

    def smtp_recipient(self, address: str) -> tuple[int, str] | None: ...

    def smtp_deliver(self, sender: str, recipients: list[str], data: bytes) -> tuple[int, str]: ...

    def imap_login(self, username: str, password: str) -> Mailbox | None: ...


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, handler, host: MailHost):
        super().__init__(("127.0.0.1", port), handler)
        self.host = host


def start(handler, port: int, host: MailHost) -> _Server:
    server = _Server(port, handler, host)
    threading.Thread(target=server.serve_forever, name=handler.__name__, daemon=True).start()
    return server


class _LineHandler(socketserver.StreamRequestHandler):
    timeout = 120  # an idle client is dropped, so a forgotten connection frees its thread
    server: _Server

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode("utf-8") + b"\r\n")

    def read_line(self) -> bytes | None:
        try:
            line = self.rfile.readline(MAX_LINE)
        except OSError:
            return None
        return line or None


# SMTP --------------------------------------------------------------------------------------


class SMTPHandler(_LineHandler):
    """One client session: EHLO/HELO, AUTH, MAIL FROM, RCPT TO, DATA, RSET, NOOP, QUIT."""

    def setup(self) -> None:
        super().setup()
        self.login: str | None = None
        self.greeted = False
        self._reset()

    def _reset(self) -> None:
        self.sender: str | None = None
        self.recipients: list[str] = []

    def handle(self) -> None:
        self.reply("220 127.0.0.1 ESMTP Parley channel simulator")
        while (line := self.read_line()) is not None:
            command, _, argument = line.decode("utf-8", "replace").strip().partition(" ")
            handler = getattr(self, f"smtp_{command.upper()}", None)
            if handler is None:
                self.reply("502 5.5.2 Command not recognized")
            elif handler(argument.strip()) == "quit":
                return

    def smtp_EHLO(self, argument: str) -> None:
        self.greeted = True
        self._reset()
        for line in ("127.0.0.1 greets you", f"SIZE {MAX_MESSAGE_BYTES}", "8BITMIME", "AUTH PLAIN LOGIN"):
            self.reply(f"250-{line}")
        self.reply("250 ENHANCEDSTATUSCODES")

    def smtp_HELO(self, argument: str) -> None:
        self.greeted = True
        self._reset()
        self.reply("250 127.0.0.1")

    def smtp_AUTH(self, argument: str) -> None:
        mechanism, _, initial = argument.partition(" ")
        if mechanism.upper() == "PLAIN":
            response = initial or self._challenge("")
            parts = _b64(response).split("\0")
            username, password = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
        elif mechanism.upper() == "LOGIN":
            username = _b64(initial) if initial else _b64(self._challenge("VXNlcm5hbWU6"))
            password = _b64(self._challenge("UGFzc3dvcmQ6"))
        else:
            self.reply("504 5.5.4 Unrecognized authentication type")
            return
        if self.server.host.smtp_login(username, password):
            self.login = username
            self.reply("235 2.7.0 Authentication successful")
        else:
            self.reply("535 5.7.8 Authentication credentials invalid")

    def _challenge(self, prompt: str) -> str:
        self.reply(f"334 {prompt}")
        return (self.read_line() or b"").decode("ascii", "replace").strip()

    def smtp_MAIL(self, argument: str) -> None:
        match = re.match(r"FROM:\s*<([^>]*)>", argument, re.IGNORECASE)
        if not self.greeted:
            self.reply("503 5.5.1 Say EHLO first")
        elif match is None:
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
        elif refusal := self.server.host.smtp_sender(match.group(1).lower(), self.login):
            self.reply(f"{refusal[0]} {refusal[1]}")
        else:
            self._reset()
            self.sender = match.group(1).lower()
            self.reply("250 2.1.0 Ok")

    def smtp_RCPT(self, argument: str) -> None:
        match = re.match(r"TO:\s*<([^>]+)>", argument, re.IGNORECASE)
        if self.sender is None:
            self.reply("503 5.5.1 Need MAIL before RCPT")
        elif match is None:
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
        elif refusal := self.server.host.smtp_recipient(match.group(1).lower()):
            self.reply(f"{refusal[0]} {refusal[1]}")
        else:
            self.recipients.append(match.group(1).lower())
            self.reply("250 2.1.5 Ok")

    def smtp_DATA(self, argument: str) -> None:
        if self.sender is None or not self.recipients:
            self.reply("503 5.5.1 Need RCPT before DATA")
            return
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        data = self._read_data()
        if data is None:
            self.reply("552 5.3.4 Message too big")
        else:
            code, text = self.server.host.smtp_deliver(self.sender, list(self.recipients), data)
            self.reply(f"{code} {text}")
        self._reset()

    def _read_data(self) -> bytes | None:
        lines, size = [], 0
        while (line := self.rfile.readline(MAX_LINE + 2)) not in (b".\r\n", b".\n", b""):
            size += len(line)
            if size <= MAX_MESSAGE_BYTES:
                lines.append(line[1:] if line.startswith(b"..") else line)  # undo dot-stuffing
        return b"".join(lines) if size <= MAX_MESSAGE_BYTES else None

    def smtp_RSET(self, argument: str) -> None:
        self._reset()
        self.reply("250 2.0.0 Ok")

    def smtp_NOOP(self, argument: str) -> None:
        self.reply("250 2.0.0 Ok")

    def smtp_QUIT(self, argument: str) -> str:
        self.reply("221 2.0.0 Bye")
        return "quit"


def _b64(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


# IMAP --------------------------------------------------------------------------------------


class IMAPHandler(_LineHandler):
    """One client session in the authenticated/selected states of RFC 3501, for one INBOX."""

    def setup(self) -> None:
        super().setup()
        self.mailbox: Mailbox | None = None
        self.selected = False
        self.read_only = False

    def handle(self) -> None:
        self.reply("* OK [CAPABILITY IMAP4rev1 UIDPLUS] Parley channel simulator ready")
        while (command := self._read_command()) is not None:
            words = tokens(command)
            if len(words) < 2:
                self.reply(f"{words[0] if words else '*'} BAD Missing command")
                continue
            tag, name, arguments = words[0], words[1].upper(), words[2:]
            if name == "UID" and arguments:
                name, arguments = f"UID {arguments[0].upper()}", arguments[1:]
            handler = getattr(self, "imap_" + name.replace(" ", "_"), None)
            try:
                if handler is None:
                    self.reply(f"{tag} BAD Unknown command {name}")
                elif handler(tag, arguments) == "logout":
                    return
            except (IndexError, ValueError) as error:
                self.reply(f"{tag} BAD {error or 'Invalid arguments'}")

    def _read_command(self) -> str | None:
        """A command line, with any `{n}` literals read in (and the client told to go on)."""
        line = self.read_line()
        if line is None:
            return None
        text = line.decode("utf-8", "replace")
        while (literal := re.search(r"\{(\d+)\+?\}\r?\n$", text)) and int(literal.group(1)) <= MAX_LINE:
            if not literal.group(0).startswith("{" + literal.group(1) + "+"):
                self.reply("+ Ready for literal data")
            data = self.rfile.read(int(literal.group(1))).decode("utf-8", "replace")
            text = text[: literal.start()] + _quote(data) + (self.read_line() or b"").decode("utf-8", "replace")
        return text.rstrip("\r\n")

    def _need_selected(self, tag: str) -> bool:
        if not self.selected:
            self.reply(f"{tag} BAD No mailbox selected")
        return self.selected

    def imap_CAPABILITY(self, tag: str, arguments: list[str]) -> None:
        self.reply("* CAPABILITY IMAP4rev1 UIDPLUS")
        self.reply(f"{tag} OK CAPABILITY completed")

    def imap_NOOP(self, tag: str, arguments: list[str]) -> None:
        self.reply(f"{tag} OK NOOP completed")

    imap_CHECK = imap_NOOP

    def imap_LOGOUT(self, tag: str, arguments: list[str]) -> str:
        self.reply("* BYE Parley channel simulator logging out")
        self.reply(f"{tag} OK LOGOUT completed")
        return "logout"

    def imap_LOGIN(self, tag: str, arguments: list[str]) -> None:
        mailbox = self.server.host.imap_login(arguments[0], arguments[1])
        if mailbox is None:
            self.reply(f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials")
            return
        self.mailbox = mailbox
        self.reply(f"{tag} OK [CAPABILITY IMAP4rev1 UIDPLUS] LOGIN completed")

    def imap_SELECT(self, tag: str, arguments: list[str], read_only: bool = False) -> None:
        if self.mailbox is None:
            self.reply(f"{tag} BAD Log in first")
            return
        if arguments[0].upper() != "INBOX":
            self.selected = False
            self.reply(f"{tag} NO [NONEXISTENT] Only INBOX exists here")
            return
        self.selected, self.read_only = True, read_only
        with self.server.host.lock:
            count = len(self.mailbox.messages)
            validity, next_uid = self.mailbox.uid_validity, self.mailbox.uid_next
        self.reply(f"* FLAGS ({' '.join(SYSTEM_FLAGS)})")
        self.reply(rf"* OK [PERMANENTFLAGS ({' '.join(SYSTEM_FLAGS)} \*)] Flags permitted")
        self.reply(f"* {count} EXISTS")
        self.reply("* 0 RECENT")
        self.reply(f"* OK [UIDVALIDITY {validity}] UIDs valid")
        self.reply(f"* OK [UIDNEXT {next_uid}] Predicted next UID")
        access = "READ-ONLY" if read_only else "READ-WRITE"
        self.reply(f"{tag} OK [{access}] {'EXAMINE' if read_only else 'SELECT'} completed")

    def imap_EXAMINE(self, tag: str, arguments: list[str]) -> None:
        self.imap_SELECT(tag, arguments, read_only=True)

    def imap_CLOSE(self, tag: str, arguments: list[str]) -> None:
        self.selected = False
        self.reply(f"{tag} OK CLOSE completed")

    def imap_EXPUNGE(self, tag: str, arguments: list[str]) -> None:
        if not self._need_selected(tag):
            return
        with self.server.host.lock:
            numbers = [n for n, m in enumerate(self.mailbox.messages, start=1) if r"\Deleted" in m.flags]
            for number in reversed(numbers):
                del self.mailbox.messages[number - 1]
        for number in reversed(numbers):
            self.reply(f"* {number} EXPUNGE")
        self.reply(f"{tag} OK EXPUNGE completed")

    # SEARCH, FETCH and STORE, by sequence number or (with UID) by UID.

    def imap_SEARCH(self, tag: str, arguments: list[str], by_uid: bool = False) -> None:
        if not self._need_selected(tag):
            return
        criteria = [word.upper() for word in arguments]
        if criteria[:1] == ["CHARSET"]:
            criteria = criteria[2:]
        with self.server.host.lock:
            found = [(n, m) for n, m in enumerate(self.mailbox.messages, start=1) if _matches(m, criteria)]
        numbers = [str(m.uid if by_uid else n) for n, m in found]
        self.reply("* SEARCH" + "".join(f" {n}" for n in numbers))
        self.reply(f"{tag} OK SEARCH completed")

    def imap_UID_SEARCH(self, tag: str, arguments: list[str]) -> None:
        self.imap_SEARCH(tag, arguments, by_uid=True)

    def imap_FETCH(self, tag: str, arguments: list[str], by_uid: bool = False) -> None:
        if not self._need_selected(tag):
            return
        items = arguments[1].strip("()").upper().split() if len(arguments) > 1 else []
        with self.server.host.lock:
            chosen = self._chosen(arguments[0], by_uid)
            answers = [(number, self._fetch_items(mail, items, by_uid)) for number, mail in chosen]
        for number, parts in answers:
            self.wfile.write(f"* {number} FETCH (".encode() + b" ".join(parts) + b")\r\n")
        self.reply(f"{tag} OK FETCH completed")

    def imap_UID_FETCH(self, tag: str, arguments: list[str]) -> None:
        self.imap_FETCH(tag, arguments, by_uid=True)

    def _fetch_items(self, mail: StoredMail, items: list[str], by_uid: bool) -> list[bytes]:
        parts: list[bytes] = [f"UID {mail.uid}".encode()] if by_uid or "UID" in items else []
        for item in items:
            if item in ("BODY[]", "BODY.PEEK[]", "RFC822"):
                name = "RFC822" if item == "RFC822" else "BODY[]"
                parts.append(f"{name} {{{len(mail.raw)}}}\r\n".encode() + mail.raw)
                if item != "BODY.PEEK[]" and not self.read_only:
                    mail.flags.add(r"\Seen")
            elif item in ("BODY.PEEK[HEADER]", "BODY[HEADER]", "RFC822.HEADER"):
                header = mail.raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                name = "RFC822.HEADER" if item == "RFC822.HEADER" else "BODY[HEADER]"
                parts.append(f"{name} {{{len(header)}}}\r\n".encode() + header)
            elif item == "RFC822.SIZE":
                parts.append(f"RFC822.SIZE {len(mail.raw)}".encode())
            elif item == "INTERNALDATE":
                moment = format_datetime(datetime.fromtimestamp(mail.received, tz=UTC))
                parts.append(f'INTERNALDATE "{moment}"'.encode())
        if "FLAGS" in items or any(i in ("BODY[]", "RFC822") for i in items):
            parts.append(f"FLAGS ({' '.join(sorted(mail.flags))})".encode())
        return parts

    def imap_STORE(self, tag: str, arguments: list[str], by_uid: bool = False) -> None:
        if not self._need_selected(tag):
            return
        if self.read_only:
            self.reply(f"{tag} NO Mailbox is read-only")
            return
        action, flags = arguments[1].upper(), set(arguments[2].strip("()").split()) if len(arguments) > 2 else set()
        with self.server.host.lock:
            chosen = self._chosen(arguments[0], by_uid)
            for _, mail in chosen:
                if action.startswith("+FLAGS"):
                    mail.flags |= flags
                elif action.startswith("-FLAGS"):
                    mail.flags -= flags
                elif action.startswith("FLAGS"):
                    mail.flags = set(flags)
                else:
                    raise ValueError(f"Unknown STORE action {action}")
            answers = [(n, m.uid, sorted(m.flags)) for n, m in chosen]
        if not action.endswith(".SILENT"):
            for number, uid, current in answers:
                self.reply(f"* {number} FETCH (UID {uid} FLAGS ({' '.join(current)}))")
        self.reply(f"{tag} OK STORE completed")

    def imap_UID_STORE(self, tag: str, arguments: list[str]) -> None:
        self.imap_STORE(tag, arguments, by_uid=True)

    def _chosen(self, sequence_set: str, by_uid: bool) -> list[tuple[int, StoredMail]]:
        messages = list(enumerate(self.mailbox.messages, start=1))
        if not messages:
            return []
        largest = messages[-1][1].uid if by_uid else len(messages)
        wanted = parse_sequence_set(sequence_set, largest)
        return [(n, m) for n, m in messages if (m.uid if by_uid else n) in wanted]


def _matches(mail: StoredMail, criteria: list[str]) -> bool:
    """ALL, SEEN, UNSEEN, NEW, DELETED and UNDELETED, all of them at once (IMAP's AND)."""
    seen, deleted = r"\Seen" in mail.flags, r"\Deleted" in mail.flags
    tests = {
        "ALL": True,
        "SEEN": seen,
        "UNSEEN": not seen,
        "NEW": not seen,
        "DELETED": deleted,
        "UNDELETED": not deleted,
    }
    return all(tests.get(criterion, True) for criterion in criteria)


def parse_sequence_set(text: str, largest: int) -> set[int]:
    """`1,3:5,7:*` → {1, 3, 4, 5, 7, …, largest}."""
    numbers: set[int] = set()
    for piece in text.split(","):
        low, _, high = piece.partition(":")
        first = largest if low == "*" else int(low)
        last = first if not high else largest if high == "*" else int(high)
        numbers.update(range(min(first, last), max(first, last) + 1))
    return numbers


def tokens(line: str) -> list[str]:
    """An IMAP command split into atoms, quoted strings (unquoted) and parenthesised or
    bracketed groups (kept whole, with their brackets)."""
    found, index = [], 0
    while index < len(line):
        char = line[index]
        if char == " ":
            index += 1
        elif char == '"':
            value, index = _quoted(line, index + 1)
            found.append(value)
        else:
            start, depth = index, 0
            while index < len(line) and (depth or line[index] != " "):
                depth += (line[index] in "([") - (line[index] in ")]")
                index += 1
            found.append(line[start:index])
    return found


def _quoted(line: str, index: int) -> tuple[str, int]:
    value = []
    while index < len(line) and line[index] != '"':
        if line[index] == "\\" and index + 1 < len(line):
            index += 1
        value.append(line[index])
        index += 1
    return "".join(value), index + 1


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def address_of(value: str) -> str:
    return parseaddr(value or "")[1].lower()
