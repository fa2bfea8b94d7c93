"""Headers every answer of the service carries, and redirects that never echo the client's Host header.

Starlette builds a redirect (``/ui`` -> ``/ui/``) from the request's Host header, so ``Host: evil.example`` got
``location: http://evil.example/ui/``: behind a cache or a proxy that passes Host on, a redirect to anywhere. A
relative location (RFC 9110 allows one) names the same place for every client. The page at /ui and the API docs
are also marked not to be framed by other sites (clickjacking), not to be content-sniffed into another type, and
not to hand their URL to other sites as a referrer.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import Message

SAFE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # older browsers; newer ones follow frame-ancestors
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
]


def relative(location: bytes) -> bytes:
    """``http://any.host:3000/ui/?user=1`` -> ``/ui/?user=1``. Leading slashes are collapsed: ``//evil.example/``
    would be a protocol-relative URL, i.e. another host again."""
    parts = urlsplit(location.decode("latin-1"))
    if not parts.scheme and not parts.netloc and not parts.path.startswith("//"):
        return location
    query = f"?{parts.query}" if parts.query else ""
    return ("/" + parts.path.lstrip("/") + query).encode("latin-1")


def with_safe_headers(start: Message) -> Message:
    """An ``http.response.start`` message with ``SAFE_HEADERS`` added where the answer does not set them itself,
    and a redirect's location made relative."""
    headers = [(k, relative(v) if k.lower() == b"location" else v) for k, v in start.get("headers", [])]
    present = {k.lower() for k, _ in headers}
    return {**start, "headers": headers + [h for h in SAFE_HEADERS if h[0] not in present]}
