"""Small built-in files a simulated customer can "attach", so inbound media needs no fixtures.

The image (PNG) and the document (PDF) are real, viewable files. Audio, video and sticker bytes
are labelled placeholders, not playable media: a connector only downloads and stores them, and
shipping real codecs' output would bloat the package for nothing.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Sample:
    data: bytes
    mime_type: str
    filename: str


def _png(width: int, height: int) -> bytes:
    """A small striped picture (teal and sand), drawn here to keep binary files out of the repo."""

    def row(y: int) -> bytes:
        pixels = bytearray()
        for x in range(width):
            stripe = ((x + y) // 8) % 2
            pixels += bytes((16, 128, 120) if stripe else (235, 215, 170))
        return b"\x00" + bytes(pixels)  # filter type 0 per scanline

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    pixels = zlib.compress(b"".join(row(y) for y in range(height)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _pdf(text: str) -> bytes:
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


@cache
def sample_for(kind: str) -> Sample:
    """The sample file for a media kind: image, document, audio, video or sticker."""
    if kind == "image":
        return Sample(_png(96, 64), "image/png", "photo.png")
    if kind == "document":
        return Sample(_pdf("Sample order receipt"), "application/pdf", "receipt.pdf")
    placeholders = {
        "audio": ("audio/ogg", "voice-note.ogg"),
        "video": ("video/mp4", "clip.mp4"),
        "sticker": ("image/webp", "sticker.webp"),
    }
    mime_type, filename = placeholders[kind]
    return Sample(f"simulated {kind}: placeholder bytes".encode(), mime_type, filename)
