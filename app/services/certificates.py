"""TLS certificates from an ACME CA: what the ``acme`` module type keeps in the database.

- **CA accounts** (``AcmeAccount``), one per module configuration (:func:`identity`:
  directory URL, email and External Account Binding), not per tariff: every item and
  every "Test connection" with those settings finds the same account. Its key is made
  here, before the account is registered, so two workers registering at once end up with
  one key (the unique identity) and the CA answers both with the same account.
- **http-01 tokens** (``AcmeChallenge``) Provisor itself answers at
  ``/.well-known/acme-challenge/<token>`` while an order is pending; removed once the
  order is valid or invalid, and after :data:`TOKEN_LIFETIME` in any case.
- **dns-01 TXT values** are not kept here: they live on the DNS module's server, and the
  operation that published them lists them in its state (``dns01``) until they are
  removed; :func:`dns01_left` finds what a service's operations still list.
- **Issued certificates** (``AcmeCertificate``): leaf and chain PEMs, names, serial,
  expiry, the issuing account, and the private key Provisor generated, encrypted with a
  key derived from SECRET_KEY (``app.secrets_box``). A renewal adds a row; the newest
  one is the service's current certificate.

Who may read what: the client of the service downloads the certificate, the chain and the
private key; staff download the certificate and the chain only (:data:`STAFF_PARTS`), the
private key stays the client's.
"""

import datetime as dt
import hashlib
import json
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from peewee import IntegrityError

from app import secrets_box
from app.db import write_transaction
from app.models import AcmeAccount, AcmeCertificate, AcmeChallenge, Operation, Service, utcnow
from app.services.errors import NotFound

ACCOUNT_KEY = "acme-account-key"
CERTIFICATE_KEY = "certificate-key"
TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
TOKEN_LIFETIME = dt.timedelta(days=8)  # longer than any CA keeps a pending authorization
PARTS = ("fullchain", "certificate", "chain", "key")
STAFF_PARTS = ("fullchain", "certificate", "chain")
PART_LABELS = {
    "fullchain": "Certificate with chain (fullchain.pem)",
    "certificate": "Certificate only (cert.pem)",
    "chain": "Intermediate chain (chain.pem)",
    "key": "Private key (privkey.pem)",
}
FILE_NAMES = {
    "fullchain": "fullchain.pem",
    "certificate": "cert.pem",
    "chain": "chain.pem",
    "key": "privkey.pem",
}


# --- accounts -----------------------------------------------------------------------------


def identity(directory_url, email, eab_kid=None, eab_hmac_key=None):
    """What makes an account: the same settings give the same account (the HMAC key
    enters as a digest: other credentials are another binding, so another account)."""
    hmac_digest = hashlib.sha256((eab_hmac_key or "").encode()).hexdigest()
    text = "\n".join([directory_url.strip(), email.strip().lower(), eab_kid or "", hmac_digest])
    return hashlib.sha256(text.encode()).hexdigest()


def account(account_identity, directory_url, email, eab_kid, make_key):
    """The account row for these settings, made (with ``make_key()``'s PEM, encrypted) if
    there is none yet. Returns ``(row, key_pem)``; a key that cannot be decrypted any more
    (SECRET_KEY changed) is replaced by a new one, whose account the CA does not know."""
    row = AcmeAccount.get_or_none(AcmeAccount.identity == account_identity)
    if row is None:
        now = utcnow()
        try:
            with write_transaction():
                AcmeAccount.create(
                    identity=account_identity,
                    directory_url=directory_url,
                    email=email,
                    eab_kid=eab_kid or None,
                    key_encrypted=secrets_box.encrypt(make_key(), ACCOUNT_KEY),
                    created_at=now,
                    updated_at=now,
                )
        except IntegrityError:
            pass  # another worker made it at the same moment: use theirs
        row = AcmeAccount.get(AcmeAccount.identity == account_identity)
    try:
        return row, secrets_box.decrypt(row.key_encrypted, ACCOUNT_KEY)
    except secrets_box.Undecryptable:
        key = make_key()
        with write_transaction():
            AcmeAccount.update(
                key_encrypted=secrets_box.encrypt(key, ACCOUNT_KEY), url=None, updated_at=utcnow()
            ).where(AcmeAccount.id == row.id).execute()
        return AcmeAccount.get_by_id(row.id), key


def set_account_url(row, url):
    """The CA told us the account's URL (registered, or found by its key)."""
    if row.url != url:
        with write_transaction():
            AcmeAccount.update(url=url, updated_at=utcnow()).where(
                AcmeAccount.id == row.id
            ).execute()
        row.url = url
    return row


def account_key(account_id):
    """The PEM of a stored account's key, or None (no such account, or undecryptable)."""
    row = AcmeAccount.get_or_none_by_id(account_id)
    if row is None:
        return None, None
    try:
        return row, secrets_box.decrypt(row.key_encrypted, ACCOUNT_KEY)
    except secrets_box.Undecryptable:
        return row, None


# --- http-01 tokens -----------------------------------------------------------------------


def put_challenge(token, key_authorization, domain, service_id=None):
    """Answer ``token`` with ``key_authorization`` from now on (the same token twice keeps
    one row); tokens older than :data:`TOKEN_LIFETIME` go."""
    if not TOKEN.match(token):
        raise ValueError(f"not an ACME token: {token[:40]!r}")
    now = utcnow()
    with write_transaction():
        AcmeChallenge.delete().where(AcmeChallenge.created_at < now - TOKEN_LIFETIME).execute()
        AcmeChallenge.insert(
            token=token,
            key_authorization=key_authorization,
            domain=domain,
            service=service_id,
            created_at=now,
        ).on_conflict(
            conflict_target=[AcmeChallenge.token],
            update={AcmeChallenge.key_authorization: key_authorization},
        ).execute()


def key_authorization(token):
    """What ``/.well-known/acme-challenge/<token>`` answers, or None (unknown token)."""
    if not isinstance(token, str) or not TOKEN.match(token):
        return None
    row = AcmeChallenge.get_or_none(
        (AcmeChallenge.token == token) & (AcmeChallenge.created_at >= utcnow() - TOKEN_LIFETIME)
    )
    return row.key_authorization if row is not None else None


def clear_challenges(service_id):
    """The order is decided: its tokens are answered no more. Returns how many went."""
    with write_transaction():
        return AcmeChallenge.delete().where(AcmeChallenge.service == service_id).execute()


def order_taken(order_url, operation_id):
    """Whether another operation follows this order (its state names it) or a stored
    certificate came from it: an attempt looking for the order it lost must not adopt
    someone else's."""
    if AcmeCertificate.select().where(AcmeCertificate.order_url == order_url).exists():
        return True
    return (
        Operation.select()
        .where(
            (Operation.id != operation_id)
            & Operation.state.is_null(False)
            & Operation.state.contains(json.dumps(order_url))
        )
        .exists()
    )


def dns01_left(service_id):
    """The dns-01 TXT values the service's operations still list in their state
    (``{"domain", "value", "module"}``, each once): published by an order that ended
    before it could remove them (PowerDNS down at the end, a cancelled operation)."""
    found = []
    rows = Operation.select(Operation.state).where(
        (Operation.service == service_id) & Operation.state.is_null(False)
    )
    for op in rows.order_by(Operation.id):
        for entry in (op.state or {}).get("dns01") or []:
            if isinstance(entry, dict) and entry not in found:
                found.append(entry)
    return found


# --- issued certificates ------------------------------------------------------------------


def parse_chain(fullchain_pem):
    """``(leaf, [intermediates])`` from the PEM chain a CA sends (leaf first)."""
    certificates = x509.load_pem_x509_certificates(fullchain_pem.encode())
    return certificates[0], certificates[1:]


def names_of(leaf):
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.DNSName)


def serial_of(leaf):
    """The serial number as CAs and ``openssl x509 -serial`` show it (hex, no prefix)."""
    return format(leaf.serial_number, "x")


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def store(service_id, order_url, fullchain_pem, key_pem, account_id=None, operation_id=None):
    """Keep the certificate an order issued (once per order: an attempt that dies after
    this and its successor store one row). The private key must match the certificate."""
    existing = AcmeCertificate.get_or_none(AcmeCertificate.order_url == order_url)
    if existing is not None:
        return existing
    leaf, chain = parse_chain(fullchain_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != leaf.public_key().public_bytes(serialization.Encoding.DER, public):
        raise ValueError("the CA's certificate is not for the key Provisor generated")
    try:
        with write_transaction():
            return AcmeCertificate.create(
                service=service_id,
                operation=operation_id,
                account=account_id,
                order_url=order_url,
                names=names_of(leaf),
                serial=serial_of(leaf),
                issuer=leaf.issuer.rfc4514_string(),
                not_before=leaf.not_valid_before_utc.replace(tzinfo=None),
                not_after=leaf.not_valid_after_utc.replace(tzinfo=None),
                certificate_pem=_pem(leaf),
                chain_pem="".join(_pem(c) for c in chain),
                key_encrypted=secrets_box.encrypt(key_pem, CERTIFICATE_KEY),
                created_at=utcnow(),
            )
    except IntegrityError:
        return AcmeCertificate.get(AcmeCertificate.order_url == order_url)


def current(service_id):
    """The service's newest certificate, or None."""
    return (
        AcmeCertificate.select()
        .where(AcmeCertificate.service == service_id)
        .order_by(AcmeCertificate.id.desc())
        .first()
    )


def to_revoke(service_id, now=None):
    """The service's certificates still valid and not revoked (closing revokes them all:
    a renewal leaves the previous one valid until it expires)."""
    now = now or utcnow()
    return list(
        AcmeCertificate.select()
        .where(
            (AcmeCertificate.service == service_id)
            & AcmeCertificate.revoked_at.is_null()
            & (AcmeCertificate.not_after > now)
        )
        .order_by(AcmeCertificate.id)
    )


def mark_revoked(certificate_id, now=None):
    with write_transaction():
        AcmeCertificate.update(revoked_at=now or utcnow()).where(
            (AcmeCertificate.id == certificate_id) & AcmeCertificate.revoked_at.is_null()
        ).execute()


def private_key_pem(row):
    """The decrypted private key of a stored certificate (bytes)."""
    return secrets_box.decrypt(row.key_encrypted, CERTIFICATE_KEY)


def download(service, part, for_client):
    """``(file name, PEM text)`` of one part of the service's current certificate;
    NotFound when there is none, or for staff asking for the private key."""
    allowed = PARTS if for_client else STAFF_PARTS
    row = current(service.id) if part in allowed else None
    if row is None or service.status not in ("active", "suspended"):
        raise NotFound(f"no {part} to download for service {service.id}")
    if part == "key":
        try:
            text = private_key_pem(row).decode()
        except secrets_box.Undecryptable as exc:
            raise NotFound(f"the private key of service {service.id}: {exc}") from None
    else:
        text = {
            "fullchain": row.certificate_pem + row.chain_pem,
            "certificate": row.certificate_pem,
            "chain": row.chain_pem,
        }[part]
    return FILE_NAMES[part], text


def downloads(service, for_client):
    """What the service page offers: ``[(part, label)]`` (empty without a certificate)."""
    if not isinstance(service, Service) or service.status not in ("active", "suspended"):
        return []
    if current(service.id) is None:
        return []
    parts = PARTS if for_client else STAFF_PARTS
    return [(part, PART_LABELS[part]) for part in parts]


def client_page_path(service_id):
    """Where the client downloads it (``my.service``): for the welcome email's link."""
    return f"/my/services/{service_id}"
