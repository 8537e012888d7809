"""People: clients, staff, admins, their passwords and API tokens."""

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.db import write_transaction
from app.models import (
    ApiToken,
    Client,
    Department,
    StaffMembership,
    User,
    search_term,
    utcnow,
)
from app.objects.inputs import ClientInput, StaffInput, StaffUpdate
from app.services.errors import NotFound, ValidationError, unique_fields

EMAIL_UNIQUE = {"email": "An account with this email exists."}
_hashers = {}


def _hasher():
    """argon2id with the configured cost (``ARGON2_TIME_COST``, ``ARGON2_MEMORY_COST`` KiB)."""
    from flask import current_app

    key = (current_app.config["ARGON2_TIME_COST"], current_app.config["ARGON2_MEMORY_COST"])
    if key not in _hashers:
        _hashers[key] = PasswordHasher(time_cost=key[0], memory_cost=key[1])
    return _hashers[key]


def hash_password(password):
    return _hasher().hash(password)


def verify_password_hash(stored_hash, password):
    """Whether ``password`` matches an argon2 hash made by :func:`hash_password`."""
    try:
        return _hasher().verify(stored_hash, password or "")
    except (VerificationError, InvalidHashError):
        return False


def check_password(user, password):
    if not user or not user.password_hash or not user.is_active:
        return False
    try:
        return _hasher().verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def authenticate(email, password):
    user = User.get_or_none(User.email == (email or "").strip().lower())
    return user if check_password(user, password or "") else None


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
        client = Client.create(name=name, email=email)
        if password:
            User.create(
                email=email,
                name=name,
                role="client",
                client=client,
                password_hash=hash_password(password),
            )
    return client


def login_of(client):
    """The client-area login of ``client`` (None if it has none)."""
    return User.get_or_none((User.client == client.id) & (User.role == "client"))


def clients(search=None):
    query = Client.select().order_by(Client.id.desc())
    term = search_term(search)
    if term:
        query = query.where(Client.name.contains(term) | Client.email.contains(term))
    return query


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
    token = "pv_" + secrets.token_urlsafe(32)
    with write_transaction():
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
