"""People: clients, staff, admins, their passwords and API tokens."""

import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.db import write_transaction
from app.models import ApiToken, Client, Department, StaffMembership, User, utcnow
from app.services.errors import NotFound, ValidationError

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
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


def _email(data, errors, key="email"):
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        errors[key] = "This field is required."
        return None
    value = value.strip().lower()
    if not EMAIL.match(value) or len(value) > 200:
        errors[key] = "Must be an email address."
        return None
    return value


def _name(data, errors):
    value = data.get("name")
    if not isinstance(value, str) or not value.strip():
        errors["name"] = "This field is required."
        return None
    if len(value.strip()) > 100:
        errors["name"] = "At most 100 characters."
        return None
    return value.strip()


def _password(data, errors, required=True):
    value = data.get("password")
    if value in (None, "") and not required:
        return None
    if not isinstance(value, str) or len(value) < 8:
        errors["password"] = "At least 8 characters."
        return None
    return value


def create_client(data, with_login=None):
    """A client; with a password it can log in to the client area."""
    errors = {}
    email = _email(data, errors)
    name = _name(data, errors)
    password = _password(data, errors, required=bool(with_login))
    if email and (
        Client.select().where(Client.email == email).exists()
        or User.select().where(User.email == email).exists()
    ):
        errors["email"] = "An account with this email exists."
    if errors:
        raise ValidationError(errors)
    with write_transaction():
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
    if search:
        term = str(search).strip()
        query = query.where(Client.name.contains(term) | Client.email.contains(term))
    return query


def get_client(client_id):
    client = Client.get_or_none_by_id(client_id)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    return client


def create_user(data, role="staff"):
    """A staff member (``department_ids``) or an admin."""
    if role not in ("staff", "admin"):
        raise ValidationError({"role": "Must be staff or admin."})
    errors = {}
    email = _email(data, errors)
    name = _name(data, errors) if data.get("name") not in (None, "") else (email or "")
    password = _password(data, errors)
    department_ids = data.get("department_ids") or []
    if isinstance(department_ids, (str, int)):
        department_ids = [department_ids]
    if not isinstance(department_ids, list):
        errors["department_ids"] = "Must be a list of department ids."
        department_ids = []
    departments = []
    for raw in department_ids:
        department = Department.get_or_none_by_id(raw)
        if department is None:
            errors["department_ids"] = f"Unknown department {raw!r}."
        else:
            departments.append(department)
    if email and User.select().where(User.email == email).exists():
        errors["email"] = "An account with this email exists."
    if errors:
        raise ValidationError(errors)
    with write_transaction():
        user = User.create(email=email, name=name, role=role, password_hash=hash_password(password))
        for department in departments:
            StaffMembership.create(user=user, department=department)
    return user


def _departments(data, errors):
    department_ids = data.get("department_ids")
    if department_ids is None:
        return None
    if isinstance(department_ids, (str, int)):
        department_ids = [department_ids]
    if not isinstance(department_ids, list):
        errors["department_ids"] = "Must be a list of department ids."
        return None
    departments = []
    for raw in department_ids:
        department = Department.get_or_none_by_id(raw)
        if department is None:
            errors["department_ids"] = f"Unknown department {raw!r}."
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
    errors = {}
    name = _name(data, errors) if "name" in data else user.name
    password = _password(data, errors, required=False)
    departments = _departments(data, errors)
    role = data.get("role", user.role)
    if role not in ("staff", "admin"):
        errors["role"] = "Must be staff or admin."
    is_active = data.get("is_active", user.is_active)
    if not isinstance(is_active, bool):
        errors["is_active"] = "Must be true or false."
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
