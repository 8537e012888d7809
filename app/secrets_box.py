"""Secrets Provisor keeps in its database, encrypted with a key derived from SECRET_KEY.

``encrypt(text, purpose)`` and ``decrypt(token, purpose)`` use Fernet (AES-128-CBC with
HMAC-SHA256, from ``cryptography``) with a key of its own per ``purpose``
(SHA-256 of ``"provisor-<purpose>:" + SECRET_KEY``), so a token of one kind (an ACME
account key, a certificate's private key, a peer's password) never decrypts as another.

SECRET_KEY can be changed: the earlier keys listed in ``SECRET_KEY_FALLBACKS`` still
decrypt (new tokens are always made with SECRET_KEY), and :func:`rotate` re-encrypts a
token with SECRET_KEY (``provisor secrets rotate`` does it for every stored secret; then
the fallbacks can go). A token made under none of these keys does not decrypt:
:class:`Undecryptable` says so, and the caller decides what that means (make a new key,
ask a person).
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app


class Undecryptable(Exception):
    """The token was made with another SECRET_KEY (or is damaged)."""


def _key(secret, purpose):
    digest = hashlib.sha256(f"provisor-{purpose}:{secret}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _fernet(purpose):
    """SECRET_KEY's key first (it encrypts), then those of SECRET_KEY_FALLBACKS."""
    config = current_app.config
    secrets = [config["SECRET_KEY"], *(config.get("SECRET_KEY_FALLBACKS") or ())]
    return MultiFernet([_key(secret, purpose) for secret in secrets])


def encrypt(text, purpose):
    """``text`` (str or bytes) encrypted for ``purpose``: an ASCII token."""
    data = text.encode() if isinstance(text, str) else bytes(text)
    return _fernet(purpose).encrypt(data).decode("ascii")


def decrypt(token, purpose):
    """The bytes ``encrypt`` was given, or :class:`Undecryptable`."""
    try:
        return _fernet(purpose).decrypt(str(token).encode("ascii"))
    except (InvalidToken, UnicodeEncodeError, ValueError):
        raise Undecryptable(_message(purpose)) from None


def is_current(token, purpose):
    """Whether ``token`` decrypts with SECRET_KEY itself (not only with a fallback)."""
    try:
        _key(current_app.config["SECRET_KEY"], purpose).decrypt(str(token).encode("ascii"))
    except (InvalidToken, UnicodeEncodeError, ValueError):
        return False
    return True


def rotate(token, purpose):
    """``token`` re-encrypted with SECRET_KEY (the same token if it already is), or
    :class:`Undecryptable` when no key opens it."""
    if is_current(token, purpose):
        return token
    try:
        return _fernet(purpose).rotate(str(token).encode("ascii")).decode("ascii")
    except (InvalidToken, UnicodeEncodeError, ValueError):
        raise Undecryptable(_message(purpose)) from None


def _message(purpose):
    return f"the stored {purpose.replace('-', ' ')} cannot be decrypted (SECRET_KEY changed?)"
