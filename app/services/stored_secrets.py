"""Every secret Provisor stores encrypted (``app.secrets_box``), re-encrypted with the
current SECRET_KEY: ``provisor secrets rotate``.

After SECRET_KEY changes, the old key goes into SECRET_KEY_FALLBACKS: everything stored
still decrypts. :func:`rotate` then re-encrypts each stored secret with the new key, so
that the fallback can be removed. What is stored encrypted: the tasks proxy's peer
passwords (client sides), ACME account keys, certificates' private keys, webhook
endpoints' signing secrets, and the secrets
module types keep in an operation's state (``ModuleType.state_secrets``: a database's
password, an ACME order's key).
"""

import logging
from dataclasses import dataclass, field

from app import secrets_box
from app.db import write_transaction
from app.models import (
    AcmeAccount,
    AcmeCertificate,
    Operation,
    ProcessingModule,
    ProxyClientSide,
    WebhookEndpoint,
)
from app.services import certificates, events, proxy

log = logging.getLogger(__name__)


@dataclass
class Rotation:
    """What :func:`rotate` did: secrets re-encrypted, already current, and those no key
    opens (each named: ``"proxy client side #3"``)."""

    rotated: int = 0
    current: int = 0
    undecryptable: list = field(default_factory=list)


def rotate():
    """Re-encrypt every stored secret with SECRET_KEY (those made with a key of
    SECRET_KEY_FALLBACKS); secrets that no key opens are left as they are and listed."""
    result = Rotation()
    for side in ProxyClientSide.select().order_by(ProxyClientSide.id):
        _rotate_column(
            result,
            ProxyClientSide,
            side.id,
            "password_encrypted",
            side.password_encrypted,
            proxy.PASSWORD_PURPOSE,
            f"proxy client side #{side.id} (password)",
        )
    for account in AcmeAccount.select().order_by(AcmeAccount.id):
        _rotate_column(
            result,
            AcmeAccount,
            account.id,
            "key_encrypted",
            account.key_encrypted,
            certificates.ACCOUNT_KEY,
            f"ACME account #{account.id} (key)",
        )
    for certificate in AcmeCertificate.select().order_by(AcmeCertificate.id):
        _rotate_column(
            result,
            AcmeCertificate,
            certificate.id,
            "key_encrypted",
            certificate.key_encrypted,
            certificates.CERTIFICATE_KEY,
            f"certificate #{certificate.id} (private key)",
        )
    for endpoint in WebhookEndpoint.select().order_by(WebhookEndpoint.id):
        _rotate_column(
            result,
            WebhookEndpoint,
            endpoint.id,
            "secret_encrypted",
            endpoint.secret_encrypted,
            events.SECRET_PURPOSE,
            f"webhook endpoint #{endpoint.id} (secret)",
        )
    _rotate_operation_states(result)
    log.info(
        "stored secrets: %d re-encrypted, %d already current, %d undecryptable",
        result.rotated,
        result.current,
        len(result.undecryptable),
    )
    return result


def _rotate_column(result, model, row_id, column, token, purpose, name):
    new = _rotated(result, token, purpose, name)
    if new is not None:
        with write_transaction():
            model.update({getattr(model, column): new}).where(
                (model.id == row_id) & (getattr(model, column) == token)
            ).execute()


def _rotated(result, token, purpose, name):
    """The re-encrypted token, or None (current already, or undecryptable: counted)."""
    if secrets_box.is_current(token, purpose):
        result.current += 1
        return None
    try:
        new = secrets_box.rotate(token, purpose)
    except secrets_box.Undecryptable:
        result.undecryptable.append(name)
        return None
    result.rotated += 1
    return new


def _state_secrets():
    """{module id: {state key: purpose}}, and every (key, purpose) any type declares (for
    operations whose module is gone)."""
    import modules

    by_type = {type_id: cls.state_secrets for type_id, cls in modules.types().items()}
    by_module = {
        row.id: by_type.get(row.type, {})
        for row in ProcessingModule.select(ProcessingModule.id, ProcessingModule.type)
    }
    every = {}
    for declared in by_type.values():
        for key, purpose in declared.items():
            every.setdefault(key, set()).add(purpose)
    return by_module, every


def _rotate_operation_states(result):
    by_module, every = _state_secrets()
    if not every:
        return
    query = (
        Operation.select(Operation.id, Operation.module, Operation.state)
        .where(Operation.state.is_null(False))
        .order_by(Operation.id)
    )
    for op in query:
        state = op.state
        if not isinstance(state, dict):
            continue
        declared = by_module.get(op.module_id)
        if declared is None:  # the module was removed: any type's declaration may apply
            candidates = {k: sorted(p) for k, p in every.items()}
        else:
            candidates = {k: [p] for k, p in declared.items()}
        changed = {}
        for key, purposes in candidates.items():
            token = state.get(key)
            if not isinstance(token, str) or not token:
                continue
            purpose = _purpose_of(token, purposes)
            name = f"operation #{op.id} (state {key!r})"
            if purpose is None:
                result.undecryptable.append(name)
                continue
            new = _rotated(result, token, purpose, name)
            if new is not None:
                changed[key] = new
        if changed:
            _save_state(op.id, changed, state)


def _purpose_of(token, purposes):
    for purpose in purposes:
        try:
            secrets_box.decrypt(token, purpose)
        except secrets_box.Undecryptable:
            continue
        return purpose
    return None


def _save_state(operation_id, changed, seen):
    """Write the re-encrypted keys into the operation's current state (a worker may have
    changed other keys meanwhile; a key it changed is left alone)."""
    from app.db import get_for_update

    with write_transaction():
        op = get_for_update(Operation, operation_id)
        if op is None or not isinstance(op.state, dict):
            return
        state = dict(op.state)
        for key, token in changed.items():
            if state.get(key) == seen.get(key):
                state[key] = token
        Operation.update(state=state).where(Operation.id == operation_id).execute()
