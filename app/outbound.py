"""Where Provisor may send requests whose answers it records: http module endpoints and
tasks proxy peers.

An endpoint's answer ends up in the attempt log that staff read, so a URL (or an address
its host name resolves to) inside the provider's own networks would let whoever sets it —
or a redirect, which Provisor does not follow — read internal services. Public addresses
are allowed; loopback, private, link-local, multicast and reserved ones only when
``OUTBOUND_ALLOWED_NETWORKS`` contains them; ``OUTBOUND_DENIED_NETWORKS`` (by default the
cloud metadata address) never. Every address a host name resolves to must pass. (A name
that resolves differently at the moment of the request is not caught: pin such hosts by
address, or keep them out of the allowed networks.)
"""

import ipaddress
import socket
from urllib.parse import urlsplit

import requests
from flask import current_app

from app import signing


class Refused(Exception):
    """The URL points where Provisor may not send requests; ``message`` says why."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


def _networks(name):
    """The networks of a setting (a tuple of them; text where a test set it by hand)."""
    value = current_app.config.get(name) or ()
    if isinstance(value, str):
        value = [part for part in value.replace(",", " ").split() if part]
    return [ipaddress.ip_network(str(n), strict=False) for n in value]


def _kind(ip):
    """What kind of non-public address ``ip`` is (None: public)."""
    for attribute, words in (
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_private", "a private"),
        ("is_multicast", "a multicast"),
        ("is_reserved", "a reserved"),
        ("is_unspecified", "an unspecified"),
    ):
        if getattr(ip, attribute):
            return words
    return None


def check(url):
    """Raise :class:`Refused` when ``url`` may not be called. A host name that does not
    resolve passes: the request itself then fails as unreachable (and is retried)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise Refused(f"{url} has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError, UnicodeError):
        return
    allowed = _networks("OUTBOUND_ALLOWED_NETWORKS")
    denied = _networks("OUTBOUND_DENIED_NETWORKS")
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        where = host if host == str(ip) else f"{host} ({ip})"
        for network in denied:
            if ip in network:
                raise Refused(f"{where} is in {network}, which OUTBOUND_DENIED_NETWORKS refuses")
        if any(ip in network for network in allowed):
            continue
        kind = _kind(ip)
        if kind is not None:
            raise Refused(
                f"{where} is {kind} address: add it to OUTBOUND_ALLOWED_NETWORKS (e.g. "
                f"{ipaddress.ip_network(ip)} or the whole network) to let Provisor call it"
            )


MAX_REPLY = 1024 * 1024
"""The most of an answer Provisor reads from an endpoint or a peer."""


def read_capped(response, limit=MAX_REPLY):
    """The body of a streamed ``requests`` response, or None when it goes on past
    ``limit`` bytes (the rest is not read). The response is closed either way."""
    try:
        data = bytearray()
        for chunk in response.iter_content(65536):
            data += chunk
            if len(data) > limit:
                return None
        return bytes(data)
    finally:
        response.close()


class TooLarge(Exception):
    """The answer goes on past the limit Provisor reads."""


def post_signed(url, body, secret, direction, timeout, headers=None, v1=True, limit=MAX_REPLY):
    """POST ``body`` (bytes) to ``url`` signed with ``secret`` for ``direction`` (and
    the URL's path, :mod:`app.signing`): the http module's requests and the outgoing
    events. The URL is checked first (:class:`Refused`); no redirect is followed (an
    answer from wherever one leads would be shown); no more than ``limit`` bytes of the
    answer are read (:class:`TooLarge`). Returns the ``requests`` response, its content
    read; ``requests`` errors (a timeout, a refused connection) are the caller's."""
    check(url)
    sent = {
        "Content-Type": "application/json",
        signing.HEADER: signing.sign(
            secret, body, direction=direction, path=urlsplit(url).path or "/", v1=v1
        ),
        "User-Agent": "Provisor",
        **(headers or {}),
    }
    reply = requests.post(
        url, data=body, headers=sent, timeout=timeout, allow_redirects=False, stream=True
    )
    content = read_capped(reply, limit)
    if content is None:
        raise TooLarge(f"the answer is larger than {limit} bytes")
    reply._content = content
    return reply
