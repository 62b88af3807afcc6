"""What a file that customers (the web chat widget) and agents (the inbox, the API) upload must be.

The type a browser declares is the file name's guess, or whatever a script says. The bytes decide:
a file is refused when it is bigger than UPLOAD_MAX_BYTES, when its content is an executable, an
HTML page or an SVG image that carries script (each would run in a browser or on a desktop that
trusts the inbox), or when its magic bytes (read by `filetype`) say it is something other than the
type it declares. Files are served from Parley only as downloads (Content-Disposition: attachment)
unless they are plain images, sound or video, always with X-Content-Type-Options: nosniff
(apps/conversations/views.file_response); this check is the other half: a page the browser would
render never gets in.
"""

import re

import filetype
from django.conf import settings

from apps.core.exceptions import DomainError

HEAD_BYTES = 8192  # what filetype reads, and enough to see how a page or an SVG opens
MB = 1024 * 1024

# Types whose content is the same thing under several names, or which filetype tells apart only
# sometimes (an .m4a and an .mp4 are both ISO media files; a .docx is a ZIP archive).
SAME_CONTENT = [
    {"image/jpeg", "image/jpg", "image/pjpeg"},
    {"audio/mpeg", "audio/mp3"},
    {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"},
    {"audio/aac", "audio/x-aac", "audio/aacp"},
    {"audio/ogg", "audio/opus", "video/ogg", "application/ogg"},
    {"video/webm", "audio/webm", "video/x-matroska"},
    {
        "video/mp4",
        "audio/mp4",
        "audio/x-m4a",
        "audio/m4a",
        "video/x-m4v",
        "video/quicktime",
        "video/3gpp",
        "audio/3gpp",
    },
    {
        "application/zip",
        "application/x-zip-compressed",
        "application/epub+zip",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.oasis.opendocument.presentation",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    },
    {"application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint", "application/x-ole-storage"},
]
EXECUTABLES = {
    "application/x-msdownload",
    "application/x-executable",
    "application/x-mach-binary",
    "application/x-sh",
    "application/x-shellscript",
    "application/wasm",
    "application/x-shockwave-flash",
    "application/x-google-chrome-extension",
    "application/vnd.microsoft.portable-executable",
    "application/java-archive",
    "application/x-java-archive",
}
# Mach-O (either byte order, 32/64-bit, universal) and a script's `#!`, which filetype leaves out.
EXECUTABLE_MAGIC = (
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
)
HTML_TYPES = {"text/html", "application/xhtml+xml", "text/javascript", "application/javascript", "text/xml"}
# How a browser sniffing a body recognises a page (WHATWG MIME Sniffing, "identifying a resource
# with an unknown MIME type"), after leading white space.
HTML_START = re.compile(
    rb"<(!doctype html|html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p|!--)[\s>/]", re.IGNORECASE
)
SVG_START = re.compile(rb"(<\?xml[^>]*>\s*)?(<!--.*?-->\s*|<!doctype[^>]*>\s*)*<svg[\s>/]", re.IGNORECASE | re.DOTALL)
SVG_ACTIVE = re.compile(
    rb"<script|<foreignobject|<iframe|<embed|<object|\son[a-z]+\s*=|javascript:|data:text/html", re.IGNORECASE
)


class FileRefused(DomainError):
    """The file's content is not what may be sent (an API answers 415 Unsupported Media Type)."""

    status = 415


class FileTooLarge(DomainError):
    code = "too_large"
    status = 413


# Types whose files filetype recognises: one that declares such a type must show its magic bytes.
DETECTABLE = ({kind.mime for kind in filetype.TYPES} | set().union(*SAME_CONTENT)) - {"application/octet-stream"}


def upload_check(*, upload, limit: int | None = None) -> str:
    """The upload's declared type, once its size and content are acceptable; else DomainError
    (`too_large`, `unsupported_file` or `type_mismatch`) naming the problem for the person."""
    declared = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
    limit = min(limit or settings.UPLOAD_MAX_BYTES, settings.UPLOAD_MAX_BYTES)
    if upload.size > limit:
        raise FileTooLarge(
            f"The file is {_size(upload.size)}; at most {_size(limit)} can be sent.",
            fields={"file": [f"At most {_size(limit)}."]},
        )
    upload.seek(0)
    content = upload.read(HEAD_BYTES)
    if declared == "image/svg+xml" or SVG_START.match(_opening(content)):
        content += upload.read()  # script may come anywhere in an image made of text
    upload.seek(0)
    if problem := content_problem(content, declared):
        code = "type_mismatch" if problem.startswith("The file's content") else "unsupported_file"
        raise FileRefused(problem, code=code, fields={"file": [problem]})
    return declared


def content_problem(head: bytes, declared: str) -> str:
    """Why a file that starts with `head` (all of it, for an SVG) and says it is `declared` is
    refused ("" when it is not)."""
    guessed = filetype.guess(head[:HEAD_BYTES])
    found = guessed.mime if guessed else ""
    opening = _opening(head)
    if found in EXECUTABLES or declared in EXECUTABLES or head.startswith((b"#!", *EXECUTABLE_MAGIC)):
        return "Programs cannot be sent: the file is an executable."
    if declared in HTML_TYPES or HTML_START.match(opening):
        return "Web pages and scripts cannot be sent as files."
    if declared == "image/svg+xml" or SVG_START.match(opening):
        return "This SVG image carries script, so it cannot be sent." if SVG_ACTIVE.search(head) else ""
    if found and not _same(found, declared) and declared != "application/octet-stream":
        return f"The file's content is {found}, not the {declared} it says it is."
    if not found and declared in DETECTABLE:
        return f"The file's content is not {declared}: it may be damaged or misnamed."
    return ""


def _size(size: int) -> str:
    return f"{size / MB:.1f} MB".replace(".0 MB", " MB") if size >= MB else f"{max(size // 1024, 1)} KB"


def _opening(content: bytes) -> bytes:
    return content[:HEAD_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n\x0c")


def _same(found: str, declared: str) -> bool:
    return found == declared or any(found in group and declared in group for group in SAME_CONTENT)
