"""People: clients, staff, admins, their passwords and API tokens."""

import datetime as dt
import hashlib
import logging
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.db import write_transaction
from app.models import (
    ApiToken,
    Client,
    Department,
    PasswordReset,
    StaffMembership,
    User,
    search_term,
    sorted_by,
    utcnow,
)
from app.objects.inputs import ClientInput, ClientUpdate, PasswordChange, StaffInput, StaffUpdate
from app.objects.inputs import PasswordReset as PasswordResetInput
from app.services.errors import NotFound, ValidationError, unique_fields

log = logging.getLogger(__name__)

EMAIL_UNIQUE = {"email": "An account with this email exists."}
RESET_LIFETIME = dt.timedelta(hours=1)  # a password reset link works this long, once
RESET_PAUSE = dt.timedelta(minutes=5)  # "Forgot password?" emails one login at most this often
_hashers = {}
_dummy_hashes = {}


def _hasher():
    """argon2id with the configured cost (``ARGON2_TIME_COST``, ``ARGON2_MEMORY_COST`` KiB)."""
    from flask import current_app

    key = (current_app.config["ARGON2_TIME_COST"], current_app.config["ARGON2_MEMORY_COST"])
    if key not in _hashers:
        _hashers[key] = PasswordHasher(time_cost=key[0], memory_cost=key[1])
        _dummy_hashes[key] = _hashers[key].hash(secrets.token_urlsafe(16))
    return _hashers[key]


def _dummy_hash():
    """A hash of a random password at the current cost: verified when there is no real
    hash to check, so that an unknown login takes as long as a known one."""
    hasher = _hasher()
    return _dummy_hashes[(hasher.time_cost, hasher.memory_cost)]


def hash_password(password):
    return _hasher().hash(password)


def verify_password_hash(stored_hash, password):
    """Whether ``password`` matches an argon2 hash made by :func:`hash_password`.

    Without a stored hash (an unknown login) the same work is done against a dummy hash,
    and the answer is no: both take as long."""
    secret = (password or "").encode("utf-8", "surrogatepass")
    try:
        matches = _hasher().verify(stored_hash or _dummy_hash(), secret)
    except (VerificationError, InvalidHashError):
        return False
    return matches and bool(stored_hash)


def needs_rehash(stored_hash):
    """Whether ``stored_hash`` was made with other costs than the configured ones (it is
    replaced at the next successful login)."""
    try:
        return _hasher().check_needs_rehash(stored_hash)
    except (InvalidHashError, ValueError):
        return False


def check_password(user, password):
    """Whether ``user`` (None: unknown) may log in with ``password``; the same argon2 work
    is done either way. A hash made with older costs is upgraded on success."""
    usable = user is not None and user.password_hash and user.is_active
    if not verify_password_hash(user.password_hash if usable else None, password):
        return False
    if needs_rehash(user.password_hash):
        old = user.password_hash
        user.password_hash = hash_password(password)
        with write_transaction():
            User.update(password_hash=user.password_hash).where(
                (User.id == user.id) & (User.password_hash == old)
            ).execute()
    return True


def authenticate(email, password):
    """The user with this email and password, or None; unknown emails take as long."""
    user = User.get_or_none(User.email == normal_email(email))
    return user if check_password(user, password or "") else None


def normal_email(email):
    """An email as logins are looked up: stripped, lower case (non-text: empty)."""
    return email.strip().lower() if isinstance(email, str) else ""


class WrongPassword(ValidationError):
    """The current password given to change one's own was wrong (a failed login: it
    counts against the login limits)."""


def change_own_password(user, data):
    """``user`` sets a new password (``current_password``, ``password``,
    ``password_repeat``): every session of theirs ends (the caller keeps its own)."""
    values, errors = PasswordChange.check(data)
    current = data.get("current_password") if isinstance(data, dict) else None
    if "password" not in errors and values["password"] != data.get("password_repeat"):
        errors["password_repeat"] = "The two passwords differ."
    if not check_password(user, current if isinstance(current, str) else ""):
        raise WrongPassword({**errors, "current_password": "Wrong password."})
    if errors:
        raise ValidationError(errors)
    with write_transaction():
        User.update(
            password_hash=hash_password(values["password"]),
            session_version=User.session_version + 1,
        ).where(User.id == user.id).execute()
    return User.get_by_id(user.id)


def end_sessions(user):
    """End every page session of ``user`` (logout, a new password): their stamped session
    version no longer matches. Returns the new version."""
    with write_transaction():
        User.update(session_version=User.session_version + 1).where(User.id == user.id).execute()
    user.session_version = User.get_by_id(user.id).session_version
    return user.session_version


def create_client(data, with_login=None):
    """A client; with a password it can log in to the client area."""
    values, errors = ClientInput.check(data)
    email, name, password = values["email"], values["name"], values["password"]
    if with_login and password is None and "password" not in errors:
        errors["password"] = "At least 8 characters."
    if email and (
        Client.select().where(Client.email == email).exists()
        or User.select().where(User.email == email).exists()
    ):
        errors["email"] = EMAIL_UNIQUE["email"]
    if errors:
        raise ValidationError(errors)
    with unique_fields(EMAIL_UNIQUE), write_transaction():
        client = Client.create(name=name, email=email, language=values["language"] or "en")
        if password:
            User.create(
                email=email,
                name=name,
                role="client",
                client=client,
                password_hash=hash_password(password),
            )
    return client


CONTACT_FIELDS = ("phone", "company", "address", "country")  # optional: given empty, emptied


def update_client(client_id, data, actor=None):
    """Change a client (``name``, ``email``, ``language``, ``phone``, ``company``,
    ``address``, ``country``): what is not given stays as it is; a contact field given
    empty is emptied. A new name or email is its login's too."""
    client = get_client(client_id)
    values, errors = ClientUpdate.check(data)
    data = data if isinstance(data, dict) else {}
    changes = {key: value for key, value in values.items() if value is not None}
    for key in CONTACT_FIELDS:
        if key in data and key not in errors and key not in changes:
            changes[key] = ""  # given empty (or null): emptied
    login = login_of(client)
    email = changes.get("email")
    if email and email != client.email:
        taken = Client.select().where((Client.email == email) & (Client.id != client.id)).exists()
        taken = taken or (
            User.select()
            .where((User.email == email) & (User.id != (login.id if login else 0)))
            .exists()
        )
        if taken:
            errors["email"] = EMAIL_UNIQUE["email"]
    if errors:
        raise ValidationError(errors)
    if changes:
        with unique_fields(EMAIL_UNIQUE), write_transaction():
            Client.update(**changes).where(Client.id == client.id).execute()
            login_changes = {k: changes[k] for k in ("name", "email") if k in changes}
            if login is not None and login_changes:
                User.update(**login_changes).where(User.id == login.id).execute()
        if actor:
            log.info("client #%s changed by %s: %s", client.id, actor, ", ".join(sorted(changes)))
    return get_client(client.id)


def login_of(client):
    """The client-area login of ``client`` (None if it has none)."""
    return User.get_or_none((User.client == client.id) & (User.role == "client"))


#: the columns the clients list sorts by
CLIENT_SORTS = {
    "id": Client.id,
    "name": Client.name,
    "email": Client.email,
    "created": Client.created_at,
}


def clients(search=None, sort="id", descending=True):
    query = Client.select()
    term = search_term(search)
    if term:
        query = query.where(
            Client.name.contains(term) | Client.email.contains(term) | Client.company.contains(term)
        )
    return sorted_by(
        query, CLIENT_SORTS, sort if sort in CLIENT_SORTS else "id", descending, Client.id
    )


def get_client(client_id):
    client = Client.get_or_none_by_id(client_id)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    return client


def create_user(data, role="staff"):
    """A staff member (``department_ids``) or an admin."""
    values, errors = StaffInput.check({**data, "role": role})
    email, password, role = values["email"], values["password"], values["role"]
    name = values["name"] or email or ""
    departments = _departments(values["department_ids"], errors)
    if email and User.select().where(User.email == email).exists():
        errors["email"] = EMAIL_UNIQUE["email"]
    if errors:
        raise ValidationError(errors)
    with unique_fields(EMAIL_UNIQUE), write_transaction():
        user = User.create(email=email, name=name, role=role, password_hash=hash_password(password))
        for department in departments:
            StaffMembership.create(user=user, department=department)
    return user


def _departments(department_ids, errors):
    """The departments of these (checked) ids; None for None."""
    if department_ids is None:
        return None
    departments = []
    for department_id in department_ids:
        department = Department.get_or_none_by_id(department_id)
        if department is None:
            errors["department_ids"] = f"Unknown department {department_id!r}."
        else:
            departments.append(department)
    return departments


def get_user(user_id):
    user = User.get_or_none_by_id(user_id)
    if user is None or not user.is_staff:
        raise NotFound(f"staff member {user_id} not found")
    return user


def update_user(user_id, data, actor):
    """Change a staff member: name, departments, role, active, password (if given)."""
    user = get_user(user_id)
    values, errors = StaffUpdate.check(data)
    name = values["name"] if values["name"] is not None else user.name
    password = values["password"]
    departments = _departments(values["department_ids"], errors)
    role = values["role"] or user.role
    is_active = values["is_active"] if values["is_active"] is not None else user.is_active
    if user.id == actor.id and (role != "admin" or is_active is False) and user.is_admin:
        errors["role" if role != "admin" else "is_active"] = (
            "You cannot demote or lock yourself out."
        )
    if errors:
        raise ValidationError(errors)
    with write_transaction():
        user.name = name
        user.role = role
        user.is_active = is_active
        if password:
            user.password_hash = hash_password(password)
            user.session_version += 1  # every session made with the old password ends
        user.save()
        if departments is not None:
            StaffMembership.delete().where(StaffMembership.user == user.id).execute()
            for department in departments:
                StaffMembership.create(user=user, department=department)
    return user


def staff():
    return list(User.select().where(User.role.in_(("staff", "admin"))).order_by(User.id))


def department_ids_of(user):
    return [
        m.department_id for m in StaffMembership.select().where(StaffMembership.user == user.id)
    ]


def create_token(email, name=""):
    """A new bearer token for a staff member or admin; returns the token text once."""
    user = User.get_or_none(User.email == (email or "").strip().lower())
    if user is None:
        raise NotFound(f"no user with email {email!r}")
    if not user.is_staff:
        raise ValidationError({"email": "API tokens are for staff and admins."})
    with write_transaction():
        return new_token(user, name)


def new_token(user, name=""):
    """A new bearer token of ``user`` (inside the caller's transaction); the text once."""
    token = "pv_" + secrets.token_urlsafe(32)
    ApiToken.create(user=user, token_hash=_token_hash(token), name=name)
    return token


def _token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def user_for_token(token):
    if not token:
        return None
    row = (
        ApiToken.select(ApiToken, User)
        .join(User)
        .where(ApiToken.token_hash == _token_hash(token))
        .first()
    )
    if row is None or not row.user.is_active:
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        ApiToken.update(last_used_at=now).where(ApiToken.id == row.id).execute()
    return row.user


def has_admin():
    return User.select().where(User.role == "admin").exists()


def ensure_first_admin():
    """On a fresh install: make an admin and return ``(email, password)``, else None."""
    if has_admin():
        return None
    password = secrets.token_urlsafe(12)
    create_user(
        {"email": "admin@provisor.localhost", "name": "Administrator", "password": password},
        role="admin",
    )
    return "admin@provisor.localhost", password


# --- password resets --------------------------------------------------------------------


def _new_password(data):
    """The new password of ``data`` (``password``, ``password_repeat``), checked."""
    values, errors = PasswordResetInput.check(data)
    repeat = data.get("password_repeat") if isinstance(data, dict) else None
    if "password" not in errors and values["password"] != repeat:
        errors["password_repeat"] = "The two passwords differ."
    if errors:
        raise ValidationError(errors)
    return values["password"]


def start_reset(user, created_by, link_for):
    """A reset link for ``user``, emailed through the outbox; ``link_for(token)`` makes
    the link's URL (the token itself is kept nowhere, only its hash)."""
    from app.services import mail

    token = secrets.token_urlsafe(32)
    now = utcnow()
    with write_transaction():
        PasswordReset.create(
            user=user.id,
            token_hash=_token_hash(token),
            created_by=created_by,
            created_at=now,
            expires_at=now + RESET_LIFETIME,
        )
        minutes = int(RESET_LIFETIME.total_seconds() // 60)
        mail.queue(
            user.email,
            "Reset your Provisor password",
            f"Hello {user.name},\n\n"
            f"to choose a new password, open this link within {minutes} minutes:\n\n"
            f"{link_for(token)}\n\n"
            "The link works once. If you did not ask for it, ignore this email: your "
            "password stays as it is.\n",
            kind="password_reset",
        )
    log.info("password reset link for %s sent (asked by %s)", user.email, created_by)


def request_reset(email, link_for):
    """ "Forgot password?": a reset link to this login's address if there is an active
    login with a password there; the caller answers the same either way."""
    user = User.get_or_none(User.email == normal_email(email))
    if user is None or not user.is_active:
        log.info("password reset asked for an unknown login")
        return None
    recent = PasswordReset.select().where(
        (PasswordReset.user == user.id)
        & (PasswordReset.created_by == "self")
        & (PasswordReset.created_at > utcnow() - RESET_PAUSE)
    )
    if recent.exists():  # one email per pause: the form cannot flood a mailbox
        log.info("password reset for %s asked again within the pause: no email", user.email)
        return None
    start_reset(user, "self", link_for)
    return user


def reset_of(token):
    """The usable reset of ``token`` (not used, not expired), or None."""
    if not isinstance(token, str) or not token or len(token) > 200:
        return None
    reset = PasswordReset.get_or_none(PasswordReset.token_hash == _token_hash(token))
    if reset is None or reset.used_at is not None or reset.expires_at <= utcnow():
        return None
    return reset


def reset_password(token, data):
    """Set a new password with a reset link's token: the link is used up, every session
    of the user ends. NotFound when the link is unknown, used or expired."""
    reset = reset_of(token)
    if reset is None:
        raise NotFound("this reset link is unknown, used or expired")
    password = _new_password(data)
    with write_transaction():
        used = (
            PasswordReset.update(used_at=utcnow())
            .where((PasswordReset.id == reset.id) & PasswordReset.used_at.is_null())
            .execute()
        )
        if not used:
            raise NotFound("this reset link is unknown, used or expired")
        _set_password(reset.user_id, password)
    log.info("password of %s reset with a link", reset.user.email)
    return User.get_by_id(reset.user_id)


def _set_password(user_id, password):
    User.update(
        password_hash=hash_password(password), session_version=User.session_version + 1
    ).where(User.id == user_id).execute()
    # the user's other unused links stop working with the new password
    PasswordReset.update(used_at=utcnow()).where(
        (PasswordReset.user == user_id) & PasswordReset.used_at.is_null()
    ).execute()


def client_login_for_reset(client_id):
    """The login of a client to send a reset link to (a ValidationError when it has
    none: set a password first)."""
    client = get_client(client_id)
    login = login_of(client)
    if login is None:
        raise ValidationError(
            {"password": "This client has no login yet: set a password to give them one."}
        )
    return login


def set_client_password(client_id, data, actor):
    """Staff set a client's password (``password``, ``password_repeat``): the client can
    log in with it; a client without a login gets one. Their sessions end."""
    client = get_client(client_id)
    password = _new_password(data)
    login = login_of(client)
    with unique_fields(EMAIL_UNIQUE), write_transaction():
        if login is None:
            if User.select().where(User.email == client.email).exists():
                raise ValidationError({"password": EMAIL_UNIQUE["email"]})
            login = User.create(
                email=client.email,
                name=client.name,
                role="client",
                client=client,
                password_hash=hash_password(password),
            )
        else:
            _set_password(login.id, password)
    log.info("password of client #%s set by %s", client.id, actor)
    return login
