"""The web explorer's files, served by the node's RPC port on GET (docs/explorer.md).

Only the files listed in ``ASSETS`` are served, read once from the package at first
use, so no request path ever reaches the file system (no traversal, no listing). Every
answer carries the security headers below: the pages may load scripts, styles and
images from the node itself only, talk to the node only (JSON-RPC on POST and the
WebSocket on the same origin), and may not be framed.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

MAX_ASSET_BYTES = 1 << 20  # a shipped file larger than this is a packaging mistake
MAX_PATH_BYTES = 256  # longer GET paths are answered 414

# URL path -> (file under static/, content type)
ASSETS: dict[bytes, tuple[str, str]] = {
    b"/": ("index.html", "text/html; charset=utf-8"),
    b"/index.html": ("index.html", "text/html; charset=utf-8"),
    b"/explorer/app.js": ("app.js", "text/javascript; charset=utf-8"),
    b"/explorer/style.css": ("style.css", "text/css; charset=utf-8"),
    b"/explorer/favicon.svg": ("favicon.svg", "image/svg+xml"),
    b"/favicon.ico": ("favicon.svg", "image/svg+xml"),
}

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-cache"),
]


@cache
def _read(name: str) -> bytes:
    data = resources.files("node.explorer").joinpath("static", name).read_bytes()
    if len(data) > MAX_ASSET_BYTES:
        raise ValueError(f"explorer asset {name} exceeds {MAX_ASSET_BYTES} bytes")
    return data


def asset(path: bytes) -> tuple[bytes, str] | None:
    """The body and content type served at ``path`` (without its query), or None when
    the explorer serves nothing there."""
    found = ASSETS.get(path)
    if found is None:
        return None
    name, content_type = found
    return _read(name), content_type
