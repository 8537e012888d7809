"""Signatures of the payment webhook, the http module and its callbacks.

Header ``X-Provisor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``.
"""

import hashlib
import hmac
import time

HEADER = "X-Provisor-Signature"


def sign(secret, body, timestamp=None):
    """The header value for ``body`` (bytes) signed with ``secret``."""
    t = int(time.time() if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret, body, header, tolerance=300, now=None):
    """Return None when ``header`` signs ``body``, else a short reason."""
    if not secret:
        return "signing secret is not configured"
    if not header:
        return f"missing {HEADER} header"
    parts = {}
    for piece in header.split(","):
        key, sep, value = piece.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return "malformed signature header"
    if not parts.get("v1"):
        return "malformed signature header"
    now = time.time() if now is None else now
    if abs(now - t) > tolerance:
        return "signature timestamp is too old"
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, v) for v in parts["v1"]):
        return "bad signature"
    return None
