"""Secrets Provisor keeps in its database, encrypted with a key derived from SECRET_KEY.

``encrypt(text, purpose)`` and ``decrypt(token, purpose)`` use Fernet (AES-128-CBC with
HMAC-SHA256, from ``cryptography``) with a key of its own per ``purpose``
(SHA-256 of ``"provisor-<purpose>:" + SECRET_KEY``), so a token of one kind (an ACME
account key, a certificate's private key) never decrypts as another. A token made under
another SECRET_KEY does not decrypt: :class:`Undecryptable` says so, and the caller
decides what that means (make a new key, ask a person).

The same scheme as the tasks proxy's stored passwords (``app.services.proxy``), which
keeps its own key for compatibility with what it stored already.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from flask import current_app


class Undecryptable(Exception):
    """The token was made with another SECRET_KEY (or is damaged)."""


def _fernet(purpose):
    secret = current_app.config["SECRET_KEY"]
    key = hashlib.sha256(f"provisor-{purpose}:{secret}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(text, purpose):
    """``text`` (str or bytes) encrypted for ``purpose``: an ASCII token."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    return _fernet(purpose).encrypt(data).decode("ascii")


def decrypt(token, purpose):
    """The bytes ``encrypt`` was given, or :class:`Undecryptable`."""
    try:
        return _fernet(purpose).decrypt(str(token).encode("ascii"))
    except (InvalidToken, UnicodeEncodeError, ValueError):
        raise Undecryptable(
            f"the stored {purpose.replace('-', ' ')} cannot be decrypted (SECRET_KEY changed?)"
        ) from None
