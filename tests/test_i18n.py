"""Translations: the client area and the clients' emails in the client's language (English
or Russian), the browser's Accept-Language before login, the language a client chooses on
their account page or staff set through the API, and catalogs that cover every marked text.
"""

import gettext
import io
import pathlib
import re

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from app.i18n import client_locale
from app.models import Client, ProductType, Service
from tests.support import db, html, login, make_client_login, wait_for

ROOT = pathlib.Path(__file__).resolve().parent.parent
RU_PO = ROOT / "translations" / "ru" / "LC_MESSAGES" / "messages.po"
RU_MO = RU_PO.with_suffix(".mo")
# what clients see: every text marked there must have its Russian translation
CLIENT_SOURCES = (
    "templates/my/",
    "templates/auth/",
    "templates/layout.html",
    "templates/macros.html",
    "app/i18n.py",
    "app/services/mail.py",
    "app/web/my.py",
    "app/web/auth_views.py",
)


def _client(app, language, email="carol@example.com"):
    """A client with a login in ``language``: ``(client_id, test client logged in)``."""
    client_id = make_client_login(app, email=email)
    with db(app):
        Client.update(language=language).where(Client.id == client_id).execute()
    browser = app.test_client()
    login(browser, email, "carol-password")
    return client_id, browser


def _tariff(api):
    _, _, tariff, _ = api.catalog("sandbox")
    return tariff


def test_a_russian_client_sees_the_client_area_in_russian(app, api):
    tariff = _tariff(api)
    _, browser = _client(app, "ru")
    page = html(browser.get("/my"))
    assert '<html lang="ru">' in page
    assert "Мои услуги" in page and "У вас пока нет услуг." in page
    assert "My services" not in page
    # an error page: its title in Russian
    missing = browser.get("/my/nothing-here")
    assert missing.status_code == 404
    assert "Не найдено" in html(missing) and "По этому адресу ничего нет." in html(missing)

    order_page = html(browser.get("/my/order"))
    assert "Заказать услугу" in order_page and "Выберите тариф." in order_page
    assert "Виртуальный сервер (VPS)" in order_page  # the built-in product type's name
    assert "9,99 " in order_page and "9.99" not in order_page
    # a form error in Russian, nothing ordered
    response = browser.post("/my/order", data={"tariff_id": "999999"})
    assert response.status_code == 422
    assert "Выберите существующий тариф." in html(response)
    # the flash message of a placed order
    params = {f"params.{k}": v for k, v in _params(api, tariff).items()}
    response = browser.post(
        "/my/order", data={"tariff_id": tariff["id"], **params}, follow_redirects=True
    )
    assert response.status_code == 200
    orders = html(response)
    # the amount written the Russian way (a decimal comma)
    assert re.search(r"Заказ №\d+ на «VPS S» оформлен: к оплате 9,99 USD\.", orders)
    assert "Мои заказы" in orders and "не оплачен" in orders  # the order's status
    # the services list: the new service awaiting payment
    services = html(browser.get("/my"))
    assert "ожидает оплаты" in services and "Оплатите заказ, чтобы начать настройку." in services


def _params(api, tariff):
    from tests.support import order_params

    return order_params(api.ok("get", f"/tariffs/{tariff['id']}").get("order_fields", []))


def test_an_english_client_sees_english_whatever_the_browser_says(app, api):
    tariff = _tariff(api)
    _, browser = _client(app, "en")
    headers = {"Accept-Language": "ru"}
    page = html(browser.get("/my", headers=headers))
    assert '<html lang="en">' in page and "My services" in page and "Мои услуги" not in page
    response = browser.post("/my/order", data={"tariff_id": "999999"}, headers=headers)
    assert response.status_code == 422 and "Choose an existing tariff." in html(response)
    params = {f"params.{k}": v for k, v in _params(api, tariff).items()}
    response = browser.post(
        "/my/order",
        data={"tariff_id": tariff["id"], **params},
        headers=headers,
        follow_redirects=True,
    )
    assert re.search(r"Order #\d+ for VPS S placed: 9\.99 USD to pay\.", html(response))


def test_before_login_the_browser_language_is_used(app, client):
    russian = html(client.get("/login", headers={"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.8"}))
    assert '<html lang="ru">' in russian and "Войти" in russian and "Пароль" in russian
    response = client.post(
        "/login",
        data={"email": "nobody@example.com", "password": "x"},
        headers={"Accept-Language": "ru"},
    )
    assert response.status_code == 422 and "Неверный адрес или пароль." in html(response)
    # past the failed-login limit (10 a minute from one address), the wait in Russian
    for _ in range(10):
        client.post("/login", data={"email": "nobody@example.com", "password": "x"})
    refused = client.post(
        "/login",
        data={"email": "nobody@example.com", "password": "x"},
        headers={"Accept-Language": "ru"},
    )
    assert refused.status_code == 429
    assert re.search(
        r"Слишком много неудачных входов: повторите через \d+ (секунд|минут)", html(refused)
    )
    # a language Provisor has no catalog for, or none asked: English
    german = html(client.get("/login", headers={"Accept-Language": "de-DE,de;q=0.9"}))
    assert '<html lang="en">' in german and "Log in" in german
    assert "Log in" in html(client.get("/login"))


def test_a_client_registering_in_russian_keeps_russian(app, client):
    app.config["ALLOW_REGISTRATION"] = True
    headers = {"Accept-Language": "ru"}
    response = client.post(
        "/register", data={"name": "Ivan", "email": "x", "password": "short"}, headers=headers
    )
    assert response.status_code == 422
    page = html(response)
    assert "Исправьте отмеченные поля." in page and "Не менее 8 символов." in page
    response = client.post(
        "/register",
        data={"name": "Ivan", "email": "ivan@example.com", "password": "ivan-password"},
        headers=headers,
        follow_redirects=True,
    )
    assert "Добро пожаловать!" in html(response)
    with db(app):
        assert Client.get(Client.email == "ivan@example.com").language == "ru"


def test_a_client_chooses_their_language(app):
    client_id, browser = _client(app, "en")
    account = html(browser.get("/account"))
    assert 'name="language"' in account and "Русский" in account
    # a bad value: the field's message, nothing changed
    response = browser.post("/account/language", data={"language": "de"})
    assert response.status_code == 422
    page = html(response)
    assert "Choose English or Russian." in page and 'aria-invalid="true"' in page
    with db(app):
        assert Client.get_by_id(client_id).language == "en"
    response = browser.post("/account/language", data={"language": "ru"}, follow_redirects=True)
    assert response.status_code == 200
    page = html(response)
    assert "Язык сохранён." in page and "Ваша учётная запись" in page
    with db(app):
        assert Client.get_by_id(client_id).language == "ru"
    # the message of a bad value in the client's language now
    response = browser.post("/account/language", data={"language": ""})
    assert response.status_code == 422 and "Выберите английский или русский." in html(response)
    # a wrong current password, in Russian too
    response = browser.post(
        "/account",
        data={"current_password": "nope", "password": "new-password-1", "password_repeat": "x"},
    )
    assert response.status_code == 422
    assert "Неверный пароль." in html(response) and "Пароли не совпадают." in html(response)


def test_staff_cannot_use_the_clients_language_form(app, client, admin):
    assert client.post("/account/language", data={"language": "ru"}).status_code in (302, 403)


def test_staff_set_a_clients_language_through_the_api(app, api):
    client = api.ok("post", "/clients", {"name": "Boris", "email": "boris@example.com"}, status=201)
    assert client["language"] == "en"
    changed = api.ok("put", f"/clients/{client['id']}", {"language": "ru"})
    assert changed["language"] == "ru" and changed["name"] == "Boris"
    renamed = api.ok("put", f"/clients/{client['id']}", {"name": "Boris B."})
    assert renamed == {**changed, "name": "Boris B."}  # the language stays
    status, body = api.put(f"/clients/{client['id']}", {"language": "fr"})
    assert status == 422
    assert body["error"]["fields"] == {"language": "Choose English or Russian."}
    status, body = api.put(f"/clients/{client['id']}", {"language": None, "name": ""})
    assert status == 422 and set(body["error"]["fields"]) == {"language", "name"}
    assert api.put("/clients/999999", {"language": "ru"})[0] == 404
    created = api.ok(
        "post",
        "/clients",
        {"name": "Olga", "email": "olga@example.com", "language": "ru"},
        status=201,
    )
    assert created["language"] == "ru"
    listed = api.ok("get", "/clients?q=olga")["clients"]
    assert [c["language"] for c in listed] == ["ru"]


def test_staff_add_a_client_in_a_language(app, client, admin):
    response = client.post(
        "/clients/new", data={"name": "Pyotr", "email": "pyotr@example.com", "language": "xx"}
    )
    assert response.status_code == 422 and "Choose English or Russian." in html(response)
    response = client.post(
        "/clients/new", data={"name": "Pyotr", "email": "pyotr@example.com", "language": "ru"}
    )
    assert response.status_code == 302
    with db(app):
        assert Client.get(Client.email == "pyotr@example.com").language == "ru"
    assert 'data-language="ru"' in html(client.get("/clients"))


def _welcome(app, api, smtp_server, language):
    app.config["SMTP_URL"] = smtp_server.url
    _, _, tariff, client = api.catalog("sandbox")
    api.ok("put", f"/clients/{client['id']}", {"language": language})
    order = api.order(client["id"], tariff["id"])
    status, paid = api.pay(order)
    assert status == 200, paid
    api.wait_operation(paid["operation_id"])
    messages = wait_for(
        lambda: [m for m in smtp_server.messages if m["to"] == [client["email"]]],
        message="the welcome email",
    )
    return order["service_id"], messages[0]


def test_the_welcome_email_of_a_russian_client_is_in_russian(app, api, smtp_server):
    from app.services.mail import DEFAULT_WELCOME_TEMPLATE

    with db(app):  # the built-in text as a browser's form sends it back: still built-in
        ProductType.update(
            welcome_template=DEFAULT_WELCOME_TEMPLATE.replace("\n", "\r\n").strip()
        ).where(ProductType.code == "vps").execute()
    service_id, message = _welcome(app, api, smtp_server, "ru")
    assert message["subject"] == f"Ваша услуга «VPS S» готова (услуга №{service_id})"
    body = message["body"]
    assert body.startswith("Здравствуйте, Alice Client!")
    assert "(виртуальный сервер (vps), услуга №" in body
    assert "IP-адрес: 192.0.2." in body  # a built-in label, translated
    assert "Спасибо, что выбрали нас." in body and "Thank you" not in body


def test_the_welcome_email_of_an_english_client_is_in_english(app, api, smtp_server):
    service_id, message = _welcome(app, api, smtp_server, "en")
    assert message["subject"] == f"Your VPS S is ready (service #{service_id})"
    assert message["body"].startswith("Hello Alice Client,")
    assert "IP address: 192.0.2." in message["body"]


def test_a_providers_own_welcome_text_is_sent_as_written(app, api, smtp_server):
    with db(app):
        ProductType.update(
            welcome_subject="Готово: {{ tariff.name }} / ready",
            welcome_template="Our own words for {{ client.name }}.",
        ).where(ProductType.code == "vps").execute()
    _, message = _welcome(app, api, smtp_server, "ru")
    assert message["subject"] == "Готово: VPS S / ready"
    assert message["body"].strip() == "Our own words for Alice Client."


def test_a_providers_own_welcome_text_stays_in_the_sandbox(app, api, smtp_server):
    with db(app):
        ProductType.update(
            welcome_template="{{ client.__class__.__mro__ }} {{ client.name }}",
        ).where(ProductType.code == "vps").execute()
    service_id, message = _welcome(app, api, smtp_server, "en")
    body = message["body"]
    assert "<class" not in body and "Alice Client" not in body
    assert "(template error: access to attribute '__class__' of 'Client' object is unsafe.)" in body
    with db(app):  # the service is active all the same
        assert Service.get_by_id(service_id).status == "active"


def test_a_providers_own_welcome_text_reads_fields_every_way(app, api, smtp_server):
    """A detail field is read as an attribute, as a key and through the mapping's
    methods, in a provider's text (in the sandbox, with Jinja's globals such as
    ``range``) as in Provisor's own."""
    with db(app):
        ProductType.update(
            welcome_template=(
                "{% for field in fields %}{{ field.label }}={{ field['value'] }}"
                "|{{ field.get('name') }}|{{ field | length }};{% endfor %}"
                "{% for i in range(2) %}[{{ i }}]{% endfor %}{{ fields[0].keys() | list }}"
            ),
        ).where(ProductType.code == "vps").execute()
    service_id, message = _welcome(app, api, smtp_server, "en")
    with db(app):
        details = Service.get_by_id(service_id).details
    body = message["body"]
    assert f"IP address={details['ip']}|ip|3;" in body
    assert f"Username={details['username']}|username|3;" in body
    assert "[0][1]['name', 'label', 'value']" in body


def test_only_provisors_own_texts_are_compiled_outside_the_sandbox(app):
    from jinja2.sandbox import SandboxedEnvironment

    from app.services import mail

    with app.app_context():
        for language in ("en", "ru"):
            with client_locale(Client(language=language)):
                builtin = mail._builtin(
                    mail.DEFAULT_WELCOME_TEMPLATE, (mail.DEFAULT_WELCOME_TEMPLATE,)
                )
                own = mail._builtin("Hello {{ client.name }}", (mail.DEFAULT_WELCOME_TEMPLATE,))
                assert builtin[1] is True and own == ("Hello {{ client.name }}", False)
                assert not isinstance(mail._compiled(*builtin).environment, SandboxedEnvironment)
                assert isinstance(mail._compiled(*own).environment, SandboxedEnvironment)


def test_staff_pages_render_in_both_languages(app, client, admin):
    for language, operations in (("en", "Operations"), ("ru", "Операции")):
        headers = {"Accept-Language": language}
        for path in (
            "/operations",
            "/tasks",
            "/services",
            "/orders",
            "/clients",
            "/outbox",
            "/catalog/tariffs",
            "/staff",
            "/account",
        ):
            response = client.get(path, headers=headers)
            assert response.status_code == 200, (path, language)
            assert operations in html(response), (path, language)


def test_client_dates_follow_the_locale(app, api):
    from app.services import orders

    tariff = _tariff(api)
    client_id, browser = _client(app, "ru")
    with db(app):
        orders.create({"client_id": client_id, "tariff_id": tariff["id"], "params": {}})
    page = html(browser.get("/my/orders"))
    # Babel's Russian medium format, e.g. "6 дек. 2026 г., 07:10:00"
    assert re.search(r"\d{1,2}\s[а-я]+\.?\s\d{4}\sг\.,\s\d{2}:\d{2}:\d{2}", page), page[-3000:]


# --- the catalogs ---------------------------------------------------------------------------


def _extracted():
    """``{msgid: {file, ...}}`` of every marked text, as ``pybabel extract`` finds them."""
    method_map = [("app/**.py", "python"), ("templates/**.html", "jinja2")]
    found = {}
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None, "lazy_gettext": None}
    for filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, keywords=keywords
    ):
        msgid = message[0] if isinstance(message, tuple) else message
        found.setdefault(msgid, set()).add(filename)
    return found


def test_the_russian_catalog_has_every_marked_text():
    with RU_PO.open("rb") as f:
        catalog = read_po(f, locale="ru")
    extracted = _extracted()
    missing = sorted(m for m in extracted if m not in catalog)
    assert missing == [], "run pybabel extract and update (README, Translations)"
    untranslated = sorted(
        msgid
        for msgid, files in extracted.items()
        if any(f.startswith(CLIENT_SOURCES) for f in files)
        and (not catalog[msgid].string or catalog[msgid].fuzzy)
    )
    assert untranslated == [], "client texts without their Russian translation"


def test_the_compiled_catalog_matches_the_po_file():
    with RU_PO.open("rb") as f:
        catalog = read_po(f, locale="ru")
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    expected = gettext.GNUTranslations(compiled)._catalog
    with RU_MO.open("rb") as f:
        committed = gettext.GNUTranslations(f)._catalog
    assert committed == expected, "run pybabel compile -d translations (README, Translations)"
