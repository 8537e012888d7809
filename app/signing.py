"""Signatures of the payment webhook, the http module's requests and their callbacks, and
the outgoing events sent to webhook endpoints.

Header ``X-Provisor-Signature: t=<unix seconds>,v1=<hex>,v2=<hex>`` (either or both):

- ``v1`` = HMAC-SHA256(secret, ``"<t>.<raw body>"``): the original scheme. It says nothing
  of where the request goes, so a request Provisor sent to an endpoint, captured, is a
  valid v1 callback for the same secret. Kept for the transition (and the payment
  webhook's public contract).
- ``v2`` = HMAC-SHA256(key, ``"<t>.<path>.<raw body>"``), where ``key`` =
  HMAC-SHA256(secret, ``"provisor-v2:<direction>"``) and ``<path>`` the request's URL path
  (``/provision``, ``/api/v1/operations/42/callback``): bound to its direction —
  ``request`` (Provisor to an endpoint), ``callback`` (an endpoint to Provisor),
  ``payment`` (a payment provider to Provisor), ``event`` (an outgoing event to a webhook
  endpoint, :mod:`app.services.events`) — and to the path it was sent to, so it cannot be
  replayed elsewhere.

A header may carry several values of one version (a secret being rotated); one matching is
enough. A header with a ``v2`` is judged by it alone.
"""

import hashlib
import hmac
import re
import time

HEADER = "X-Provisor-Signature"
DIRECTIONS = ("request", "callback", "payment", "event")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def _v1(secret, t, body):
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def _v2(secret, t, body, direction, path):
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown signature direction {direction!r}")
    key = hmac.new(secret.encode(), f"provisor-v2:{direction}".encode(), hashlib.sha256).digest()
    return hmac.new(key, f"{t}.{path}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret, body, timestamp=None, direction=None, path=None, v1=True):
    """The header value for ``body`` (bytes) signed with ``secret``: ``v1``, and ``v2``
    too when ``direction`` and ``path`` are given (``v1=False``: v2 alone)."""
    t = int(time.time() if timestamp is None else timestamp)
    parts = [f"t={t}"]
    if v1:
        parts.append(f"v1={_v1(secret, t, body)}")
    if direction is not None:
        parts.append(f"v2={_v2(secret, t, body, direction, path or '/')}")
    return ",".join(parts)


def parse(header):
    """``(t, {"v1": [...], "v2": [...]})`` of a header, or a short reason it is malformed."""
    if not header:
        return f"missing {HEADER} header"
    parts = {}
    for piece in header.split(","):
        key, sep, value = piece.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value.strip().lower())
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return "malformed signature header"
    macs = {v: [m for m in parts.get(v, []) if _HEX.match(m)] for v in ("v1", "v2")}
    if not macs["v1"] and not macs["v2"]:
        return "malformed signature header"
    return t, macs


def verify(secret, body, header, tolerance=300, now=None, direction=None, path=None, v1=True):
    """None when ``header`` signs ``body``, else a short reason.

    With ``direction`` (and ``path``), a ``v2`` signature is checked against them; a
    header without one is judged by ``v1`` when ``v1`` allows it (the transition),
    refused otherwise."""
    if not secret:
        return "signing secret is not configured"
    parsed = parse(header)
    if isinstance(parsed, str):
        return parsed
    t, macs = parsed
    now = time.time() if now is None else now
    if abs(now - t) > tolerance:
        return "signature timestamp is too old"
    if direction is not None and macs["v2"]:
        expected = _v2(secret, t, body, direction, path or "/")
        if any(hmac.compare_digest(expected, m) for m in macs["v2"]):
            return None
        return "bad signature (v2: signed for another direction or path, or another secret)"
    if not v1:
        return "a v2 signature is required (see the http module's signing in the README)"
    if not macs["v1"]:
        return "malformed signature header"
    expected = _v1(secret, t, body)
    if not any(hmac.compare_digest(expected, m) for m in macs["v1"]):
        return "bad signature"
    return None
