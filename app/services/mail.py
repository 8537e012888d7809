"""Email: every message is stored in the outbox first, then delivered.

With ``SMTP_URL`` set (``smtp://[user:pass@]host:port``, ``smtps://...`` or
``smtp+starttls://...``) a worker sends it; a failure is retried with a growing delay and
the sweep re-sends what a lost message left behind, so nothing is lost while the mail
server is down. Without ``SMTP_URL`` the message stays in the outbox the UI shows.
"""

import functools
import logging
import smtplib
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from urllib.parse import unquote, urlparse

from flask import current_app
from jinja2 import Environment
from jinja2.sandbox import SandboxedEnvironment

from app import guards
from app.db import write_transaction
from app.i18n import N_, client_locale, gettext, tr
from app.models import Email, parse_id, search_term, sorted_by, utcnow
from app.services import dispatch
from app.states import EMAIL

log = logging.getLogger(__name__)

# a provider's texts are rendered in Jinja's sandbox (a template can only read what it is
# given, and no attribute starting with "_"); Provisor's own texts, from the source and its
# translation catalogs, without it (the sandbox checks every attribute a template reads)
_templates = SandboxedEnvironment(autoescape=False)
_builtin_templates = Environment(autoescape=False)
# Provisor's own texts use none of Jinja's default globals (range, dict, cycler...): without
# them a render does not copy them into its context one by one (a KeyError each, from the
# ChainMap Jinja looks them up in)
_builtin_templates.globals.clear()


@functools.lru_cache(maxsize=64)
def _compiled(source, builtin=False):
    """Templates come from the database; compile each distinct text once."""
    return (_builtin_templates if builtin else _templates).from_string(source)


def queue(to, subject, body, kind="", service=None):
    """Store an email and send it once the transaction commits (with no SMTP server it
    stays in the outbox, and goes out by the sweep once ``SMTP_URL`` is set)."""
    has_smtp = bool(current_app.config.get("SMTP_URL"))
    email = Email(
        # headers on one line (a line break in a title would inject a header, and the
        # mail library refuses it), NULs (which PostgreSQL refuses) shown, not stored
        to=guards.one_line(to, 250),
        subject=guards.one_line(subject, 250),
        body=guards.storable(body),
        kind=kind,
        service=service,
        status="queued" if has_smtp else "outbox",
        next_try_at=utcnow(),
    )
    # without an SMTP server nobody needs its id now: the INSERT goes with the
    # transaction's next statement or its COMMIT (PostgreSQL), one round trip less
    email.save(force_insert=True, later=not has_smtp)
    if has_smtp:
        dispatch.emails([email.id])
    return email


# Provisor's built-in welcome texts (the seeds of migrations 0001 and 0002, the model's
# default): a product type that still has one gets it in the client's language; a text
# the provider wrote is sent as written.
DEFAULT_WELCOME_SUBJECTS = (
    N_("Your {{ tariff.name }} is ready (service #{{ service.id }})"),
    N_("Your {{ tariff.name }} is ready"),
    N_("Your service is ready"),
)
DEFAULT_WELCOME_TEMPLATE = N_("""Hello {{ client.name }},

your {{ product_type.name | lower }} "{{ tariff.name }}" (service #{{ service.id }}) is active.

{% for field in fields %}{{ field.label }}: {{ field.value }}
{% endfor %}
Thank you for choosing us.
""")


def _builtin(text, defaults):
    """``text`` in the current language if it is one of Provisor's built-in ``defaults``
    (its catalog entry), else as the provider wrote it; and whether it is a built-in one."""
    same = {default.strip(): default for default in defaults}
    default = same.get(text.replace("\r\n", "\n").strip())  # as a form saves it back
    return (tr(default), True) if default is not None else (text, False)


class _Field(dict):
    """A detail field as a template sees it: a mapping of its ``name``, ``label`` and
    ``value``, also read as attributes (``field.label``). Jinja tries an attribute first
    and only then the key: for a plain dict each ``field.label`` raised and threw away an
    AttributeError (ten per welcome email)."""

    __slots__ = ()

    name = property(lambda self: self["name"])
    label = property(lambda self: self["label"])
    value = property(lambda self: self["value"])


def _context(service, **extra):
    """What every template about a service may use: service, tariff, client,
    product_type, details and fields (each with label and value), and ``extra``; the
    built-in labels and names in the current language."""
    tariff = service.tariff
    product_type = tariff.product_type
    details = service.details or {}
    fields = [
        _Field(
            name=f["name"], label=tr(f.get("label") or f["name"]), value=details.get(f["name"], "")
        )
        for f in product_type.detail_fields or []
    ]
    known = {f["name"] for f in fields}
    fields += [
        _Field(name=k, label=k, value=v) for k, v in sorted(details.items()) if k not in known
    ]
    return {
        "service": service,
        "tariff": tariff,
        "client": service.client,
        "product_type": _TranslatedName(product_type),
        "details": details,
        "fields": fields,
        **extra,
    }


def render_welcome(service):
    """The welcome email's subject and body, in the client's language where the texts are
    Provisor's own (the product type's built-in template, labels and name)."""
    product_type = service.tariff.product_type
    context = _context(service)
    subject_source = product_type.welcome_subject or DEFAULT_WELCOME_SUBJECTS[-1]
    body_source = product_type.welcome_template or ""
    subject = _compiled(*_builtin(subject_source, DEFAULT_WELCOME_SUBJECTS))
    body = _compiled(*_builtin(body_source, (DEFAULT_WELCOME_TEMPLATE,)))
    return subject.render(context).strip(), body.render(context)


class _TranslatedName:
    """A product type seen by a welcome template: its name in the current language when
    it is a built-in one (a provider's own name stays as written)."""

    def __init__(self, product_type):
        self._product_type = product_type

    @property
    def name(self):
        return tr(self._product_type.name)

    def __getattr__(self, attr):
        return getattr(self._product_type, attr)


def queue_welcome(service):
    """Queue the welcome email of a service that became active, in its client's language."""
    with client_locale(service.client):
        try:
            subject, body = render_welcome(service)
        except Exception as exc:  # a broken template must not block the activation
            log.exception("welcome template of %s failed", service.tariff.product_type.code)
            subject = gettext("Your service #%(id)s is ready", id=service.id)
            body = "\n".join(f"{k}: {v}" for k, v in (service.details or {}).items())
            body += "\n\n" + gettext("(template error: %(error)s)", error=exc)
    return queue(service.client.email, subject, body, kind="welcome", service=service)


# --- notices: the client hears of what happened to a service ------------------------------

# per operation kind (``notify`` in app/states.py): the default subject and text, for every
# product type until an admin edits them on the product type; sent in the client's
# language while they are Provisor's own
NOTICE_DEFAULTS = {
    "suspend": (
        N_("Your {{ tariff.name }} (service #{{ service.id }}) is suspended"),
        N_("""Hello {{ client.name }},

your {{ product_type.name | lower }} "{{ tariff.name }}" (service #{{ service.id }}) has been suspended.
{% if reason %}
Reason: {{ reason }}
{% endif %}
Nothing is deleted: once the reason is settled we resume it. Reply to this email if you
have a question.
"""),
    ),
    "resume": (
        N_("Your {{ tariff.name }} (service #{{ service.id }}) is active again"),
        N_("""Hello {{ client.name }},

your {{ product_type.name | lower }} "{{ tariff.name }}" (service #{{ service.id }}) has been resumed:
it works again with the same access details.
"""),
    ),
    "close": (
        N_("Your {{ tariff.name }} (service #{{ service.id }}) is closed"),
        N_("""Hello {{ client.name }},

your {{ product_type.name | lower }} "{{ tariff.name }}" (service #{{ service.id }}) has been closed
and removed from our systems. Thank you for having been our client.
"""),
    ),
    "change_tariff": (
        N_("Your service #{{ service.id }} is now on {{ tariff.name }}"),
        N_("""Hello {{ client.name }},

your {{ product_type.name | lower }} (service #{{ service.id }}) has moved from "{{ old_tariff.name }}"
to "{{ tariff.name }}" ({{ tariff.price }} {{ tariff.currency }}).
Your access details stay the same.
"""),
    ),
    "change_password": (
        N_("New password for your {{ tariff.name }} (service #{{ service.id }})"),
        N_("""Hello {{ client.name }},

your {{ product_type.name | lower }} "{{ tariff.name }}" (service #{{ service.id }}) has a new
password; the previous one no longer works.

New password: {{ password }}

Your access details:
{% for field in fields %}{{ field.label }}: {{ field.value }}
{% endfor %}"""),
    ),
}
NOTICE_KINDS = tuple(NOTICE_DEFAULTS)
NOTICE_HELP = {
    "suspend": "reason: why staff suspended it (may be empty)",
    "change_tariff": "old_tariff: the tariff before; tariff: the new one",
    "change_password": "password: the new password (also in details and fields)",
}


def notice_template(product_type, kind):
    """``(subject, text)`` of the notice of ``kind`` for ``product_type``: its own, else
    the default."""
    own = (product_type.notice_templates or {}).get(kind) or {}
    subject, text = NOTICE_DEFAULTS[kind]
    return own.get("subject") or subject, own.get("template") or text


def render_notice(service, kind, **extra):
    """The notice's subject and body (the built-in texts in the current language)."""
    subject, text = notice_template(service.tariff.product_type, kind)
    default_subject, default_text = NOTICE_DEFAULTS[kind]
    context = _context(service, **extra)
    subject = _compiled(*_builtin(subject, (default_subject,)))
    body = _compiled(*_builtin(text, (default_text,)))
    return subject.render(context).strip(), body.render(context)


def queue_notice(service, kind, **extra):
    """Tell the client, in their language, what the operation of ``kind`` did to their
    service (inside the operation's transaction: stored once with it, delivered by the
    outbox)."""
    with client_locale(service.client):
        try:
            subject, body = render_notice(service, kind, **extra)
        except Exception as exc:  # a broken template must not lose the operation's result
            log.exception("%s template of %s failed", kind, service.tariff.product_type.code)
            subject = f"#{service.id}: {kind.replace('_', ' ')}"
            body = "\n".join(f"{k}: {v}" for k, v in sorted(extra.items()) if isinstance(v, str))
            body += "\n\n" + gettext("(template error: %(error)s)", error=exc)
    return queue(service.client.email, subject, body, kind=f"notice_{kind}", service=service)


def _smtp_settings():
    url = current_app.config.get("SMTP_URL")
    if not url:
        return None
    parsed = urlparse(url)
    return {
        "scheme": parsed.scheme,
        "host": parsed.hostname or "localhost",
        "port": parsed.port or (465 if parsed.scheme == "smtps" else 25),
        "username": unquote(parsed.username) if parsed.username else None,
        "password": unquote(parsed.password) if parsed.password else None,
    }


def _send_smtp(settings, email):
    message = EmailMessage()
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = guards.one_line(email.to)  # rows stored before queue() cleaned them
    message["Subject"] = guards.one_line(email.subject)
    message["Message-ID"] = make_msgid(idstring=f"provisor-email-{email.id}")
    message.set_content(email.body)
    timeout = current_app.config["MAIL_TIMEOUT"]
    cls = smtplib.SMTP_SSL if settings["scheme"] == "smtps" else smtplib.SMTP
    with cls(settings["host"], settings["port"], timeout=timeout) as smtp:
        if settings["scheme"] == "smtp+starttls":
            smtp.starttls()
        if settings["username"]:
            smtp.login(settings["username"], settings["password"] or "")
        smtp.send_message(message)


def deliver(email_id):
    """Send one stored email if it is due (idempotent: a claimed email is skipped)."""
    now = utcnow()
    settings = _smtp_settings()
    lease = now + timedelta(seconds=current_app.config["MAIL_TIMEOUT"] * 3 + 30)
    with write_transaction():
        email = Email.get_or_none_by_id(email_id)
        if email is None or not EMAIL.allows("claim", email.status):
            return None
        if email.next_try_at and email.next_try_at > now + timedelta(seconds=1):
            return None
        if settings is None:
            EMAIL.move(email, "park")
            email.save()
            return email
        claimed = (
            Email.update(
                status=EMAIL.target("claim", email.status),
                attempts=Email.attempts + 1,
                next_try_at=lease,
            )
            .where((Email.id == email.id) & (Email.status == email.status))
            .execute()
        )
        if claimed != 1:
            return None
    try:
        _send_smtp(settings, email)
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is recorded and retried
        if not isinstance(exc, (OSError, smtplib.SMTPException)):
            log.exception("email %s cannot be built or sent", email_id)
        with write_transaction():
            email = Email.get_by_id(email_id)
            base = current_app.config["MAIL_RETRY_DELAY"]
            delay = base * 2 ** min(email.attempts - 1, 6)
            EMAIL.move(email, "fail")
            email.last_error = f"{exc.__class__.__name__}: {exc}"[:1000]
            email.next_try_at = utcnow() + timedelta(seconds=delay)
            email.save()
            dispatch.emails([email.id], delay=delay)
        log.warning("email %s not sent (%s); retrying in %s s", email_id, exc, delay)
        return email
    with write_transaction():
        Email.update(
            status=EMAIL.target("sent", "sending"), sent_at=utcnow(), last_error=None
        ).where((Email.id == email_id) & Email.status.in_(EMAIL.sources("sent"))).execute()
    return Email.get_by_id(email_id)


def sweep(limit=500):
    """Re-send due emails whose message was lost and reclaim ones stuck in ``sending``.

    Each email on its own (:func:`sweeps.each`): one that fails is logged with the reason
    kept as its last error, and the others still go out. Returns counts.
    """
    from app.services import sweeps

    now = utcnow()
    grace = timedelta(seconds=current_app.config["SWEEP_GRACE"])
    stuck = [
        row.id
        for row in Email.select(Email.id)
        .where(Email.status.in_(EMAIL.sources("reclaim")) & (Email.next_try_at < now))
        .limit(limit)
    ]
    errors = sweeps.each("email", stuck, lambda email_id: _reclaim(email_id, now), _note_error)
    if current_app.config.get("SMTP_URL"):
        # an outbox kept while there was no SMTP server goes out once there is one
        with write_transaction():
            Email.update(status=EMAIL.target("release", "outbox"), next_try_at=now).where(
                Email.status.in_(EMAIL.sources("release"))
            ).execute()
    due = [
        row.id
        for row in Email.select(Email.id)
        .where(Email.status.in_(EMAIL.sources("claim")) & (Email.next_try_at <= now - grace))
        .limit(limit)
    ]
    errors += sweeps.each("email", due, lambda email_id: _resend(email_id, now), _note_error)
    return {"emails_resent": len(due), "emails_reclaimed": len(stuck), "email_errors": errors}


def _reclaim(email_id, now):
    """An email left in ``sending`` past its lease (its worker stopped) is due again."""
    with write_transaction():
        Email.update(status=EMAIL.target("reclaim", "sending"), next_try_at=now).where(
            (Email.id == email_id)
            & Email.status.in_(EMAIL.sources("reclaim"))
            & (Email.next_try_at < now)
        ).execute()


def _resend(email_id, now):
    with write_transaction():
        Email.update(next_try_at=now).where(Email.id == email_id).execute()
        dispatch.emails([email_id])


def _note_error(email_id, message):
    Email.update(last_error=message).where(Email.id == email_id).execute()


#: the columns the outbox sorts by
EMAIL_SORTS = {
    "id": Email.id,
    "to": Email.to,
    "subject": Email.subject,
    "kind": Email.kind,
    "status": Email.status,
    "attempts": Email.attempts,
    "created": Email.created_at,
    "sent": Email.sent_at,
}


def outbox(status=None, search=None, sort="id", descending=True):
    """Stored emails; ``search``: the recipient or the subject (or ``#id``)."""
    query = Email.select()
    if status:
        query = query.where(Email.status == status)
    term = search_term(search)
    if term:
        cond = Email.to.contains(term) | Email.subject.contains(term)
        number = parse_id(term.lstrip("#"))
        if number is not None:
            cond = cond | (Email.id == number) | (Email.service == number)
        query = query.where(cond)
    return sorted_by(
        query, EMAIL_SORTS, sort if sort in EMAIL_SORTS else "id", descending, Email.id
    )


def get(email_id):
    """One stored email."""
    from app.services.errors import NotFound

    email = Email.get_or_none_by_id(email_id)
    if email is None:
        raise NotFound(f"email {email_id} not found")
    return email


def for_service(service_id):
    """The emails about one service, newest first."""
    return list(Email.select().where(Email.service == service_id).order_by(Email.id.desc()))
