"""Translations (Flask-Babel): the client area and the clients' emails in English or Russian,
the staff pages marked for translation.

The locale of a request: the logged-in client's ``language``, else the best of the
browser's ``Accept-Language`` among :data:`LANGUAGES`, else English. An email to a client
is rendered in that client's language (:func:`client_locale`), whoever triggers it.

Catalogs: ``translations/<lang>/LC_MESSAGES/messages.po`` (and the compiled ``.mo``) at
the top of the source tree, inside the package (``app/translations``) in a wheel; see
README, "Translations", for the pybabel commands.
"""

from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal, InvalidOperation

from babel import Locale
from flask import has_request_context, request
from flask_babel import (
    Babel,
    force_locale,
    format_datetime,
    format_decimal,
    get_translations,
    gettext,
    lazy_gettext,
)
from peewee import InterfaceError, OperationalError

from app.models import Client

LANGUAGES = Client.LANGUAGES
DEFAULT_LANGUAGE = "en"
# each language named in itself (the choice on the account page)
LANGUAGE_NAMES = {"en": "English", "ru": "Русский"}

babel = Babel()


def N_(message):  # the name pybabel extracts: a marker, translated where it is shown
    """Mark ``message`` for the catalog without translating it here (it is translated
    where it is shown, with :func:`tr` or :func:`translated`)."""
    return message


# Messages the services give in English (form errors, statuses, built-in field labels)
# that clients see: marked here so that the catalog has them; the client pages translate
# them where they show them (``translated``, the ``|tr`` filter).
CLIENT_MESSAGES = (
    N_("This field is required."),
    N_("At least 8 characters."),
    N_("Wrong password."),
    N_("Wrong email or password."),
    N_("The two passwords differ."),
    N_("An account with this email exists."),
    N_("Must be an email address."),
    N_("Choose an existing tariff."),
    N_("This tariff cannot be ordered: no enabled module serves it."),
    N_("Choose English or Russian."),
    # statuses a client sees on its services and orders
    N_("active"),
    N_("suspended"),
    N_("closed"),
    N_("failed"),
    N_("unpaid"),
    N_("paid"),
    N_("cancelled"),
    N_("awaiting payment"),
    N_("ordered"),
    N_("processing"),
    # tariff periods, what a service is undergoing, certificate files, built-in product types
    N_("month"),
    N_("quarter"),
    N_("year"),
    N_("once"),
    N_("being suspended"),
    N_("being resumed"),
    N_("being closed"),
    N_("moving to another tariff"),
    N_("being renewed"),
    # what clients may ask for on their service (app/states.py, clients_may_request)
    N_("getting a new password"),
    N_("Change password"),
    N_("The service gets a new password: the current one stops working."),
    N_("Certificate with chain (fullchain.pem)"),
    N_("Certificate only (cert.pem)"),
    N_("Intermediate chain (chain.pem)"),
    N_("Private key (privkey.pem)"),
    N_("Shared hosting"),
    N_("Virtual private server"),
    N_("Dedicated server"),
    N_("TLS certificate"),
    N_("Database"),
    N_("Custom service"),
    N_("DNS hosting"),
    # the roles beside a login's name
    N_("client"),
    N_("staff"),
    N_("admin"),
    N_("being set up"),
    # the built-in product types' detail fields (a provider's own labels stay as written)
    N_("Domain"),
    N_("IP address"),
    N_("Username"),
    N_("Password"),
    N_("Control panel URL"),
    N_("Hostname"),
    N_("Root password"),
    N_("IPMI / KVM URL"),
    N_("Name servers"),
    N_("Expires on"),
    N_("Common name"),
    N_("Certificate download URL"),
    N_("Host"),
    N_("Database name"),
    N_("Details"),
    N_("Domain name"),
    N_("Operating system"),
    N_("Database name prefix"),
    N_("Domain names (the first is the common name)"),
    N_("Port"),
    N_("No preference"),
)


def translated(messages):
    """``{field: message}`` with each message in the current language when the catalog
    has it (a message it lacks stays as it is)."""
    return {key: tr(message) for key, message in (messages or {}).items()}


def tr(text):
    """A text made elsewhere (a status, a service's message, a built-in label) in the
    current language when the catalog has it; as it is otherwise. Not markup: it is
    escaped like any value (the ``_`` of templates would trust it)."""
    if not isinstance(text, str) or not text:
        return text
    translations = _client_translations.get()
    if translations is not None:
        return translations.ugettext(text)
    return gettext(text)


# the catalog of the language :func:`client_locale` set, looked up once for its block: an
# email's labels and names are several ``tr`` calls, each of which would find the
# locale's catalog again through Flask-Babel (12 µs a call against 0.2 µs)
_client_translations = ContextVar("client_translations", default=None)


def best_language(value):
    """``value`` if it is a supported language code, else None."""
    return value if value in LANGUAGES else None


def select_locale():
    """The locale of this request: the logged-in client's language, else the browser's
    Accept-Language among the supported ones, else English."""
    if not has_request_context():
        return DEFAULT_LANGUAGE
    from flask_login import current_user

    try:
        user = current_user
        if user and user.is_authenticated and getattr(user, "client_id", None):
            language = best_language(getattr(user.client, "language", None))
            if language:
                return language
    except (OperationalError, InterfaceError, Client.DoesNotExist):  # the database is away
        pass
    return request.accept_languages.best_match(LANGUAGES) or DEFAULT_LANGUAGE


# each supported language's babel Locale, parsed once (Flask-Babel takes a Locale as it is;
# a code would be parsed again for every email)
_LOCALES = {language: Locale.parse(language) for language in LANGUAGES}


@contextmanager
def client_locale(client):
    """Translate in ``client``'s language inside the block (its emails)."""
    language = best_language(getattr(client, "language", None)) or DEFAULT_LANGUAGE
    with force_locale(_LOCALES[language]):
        token = _client_translations.set(get_translations())
        try:
            yield language
        finally:
            _client_translations.reset(token)


def local_datetime(value, format="medium"):
    """A datetime (naive UTC) in the current locale's way, e.g. ``6 дек. 2026 г., 07:10:00``."""
    if not value:
        return ""
    return format_datetime(value, format)


def local_money(value, currency=""):
    """An amount with two decimals the current locale's way, and its currency code:
    ``1,234.50 USD`` in English, ``1 234,50 USD`` in Russian."""
    if value is None or value == "":
        return ""
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return f"{value} {currency}".strip()
    return f"{format_decimal(number, format='#,##0.00')} {currency}".strip()


def init_app(app):
    from app import bundled

    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LANGUAGE)
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", bundled("translations"))
    babel.init_app(app, locale_selector=select_locale)
    app.jinja_env.filters["local_datetime"] = local_datetime
    app.jinja_env.filters["tr"] = tr
    app.jinja_env.filters["local_money"] = local_money
    app.jinja_env.globals["LANGUAGE_NAMES"] = LANGUAGE_NAMES

    @app.context_processor
    def _html_lang():
        from flask_babel import get_locale

        locale = get_locale()
        return {"html_lang": str(locale.language) if locale else DEFAULT_LANGUAGE}


__all__ = [
    "LANGUAGES",
    "N_",
    "babel",
    "client_locale",
    "gettext",
    "init_app",
    "lazy_gettext",
    "translated",
]
