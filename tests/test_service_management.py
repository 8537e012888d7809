"""Service management (issue 12): a reason with suspend, emails to the client when a
suspend, resume, close, tariff change or new password is done (editable per product type,
through the outbox, once each), and ``change_password`` from the staff pages, the API and
the client area. Real components: the sandbox and http modules' operations run on the
embedded worker, the http module talks to a real HTTP server on loopback, emails go to a
real SMTP server (aiosmtpd)."""

import pytest

from app.models import Attempt, Email, Operation, ProductType, Service
from app.services import mail
from tests.support import db, html, login, make_client_login, paid_service, wait_for


def _emails(app, service_id, kind):
    with db(app):
        return list(Email.select().where((Email.service == service_id) & (Email.kind == kind)))


def _emails_once_recorded(app, service_id, kind):
    """The emails of ``kind`` once none is ``sending``: the SMTP server has a message a
    moment before its sender records it sent."""
    return wait_for(
        lambda: (
            (emails := _emails(app, service_id, kind))
            and all(e.status != "sending" for e in emails)
            and emails
        ),
        timeout=15,
        message=f"the {kind} emails recorded",
    )


def _delivered(smtp_server, subject_part, count=1):
    """Wait for ``count`` messages whose subject has ``subject_part``; they are all."""

    def found():
        hits = [m for m in smtp_server.messages if subject_part in m["subject"]]
        return hits if len(hits) >= count else None

    return wait_for(found, timeout=15, message=f"an email about {subject_part!r}")


def _act(api, service_id, kind, body=None, statuses=("done",)):
    op = api.ok("post", f"/services/{service_id}/{kind}", body or {}, status=202)
    return api.wait_operation(op["id"], statuses)


def _log(app, op_id):
    with db(app):
        return "\n".join(a.log or "" for a in Attempt.select().where(Attempt.operation == op_id))


# --- suspend with a reason, and the notices of each kind --------------------------------


def test_suspend_reason_reaches_module_client_and_email_then_each_notice_once(
    app, api, client, smtp_server
):
    app.config["SMTP_URL"] = smtp_server.url
    ids = paid_service(api)
    service_id = ids["service_id"]
    reason = "Invoice #42 is unpaid"
    op = _act(api, service_id, "suspend", {"reason": f"  {reason} "})
    assert op["params"]["reason"] == reason  # stored with the operation, passed to the module
    assert f"suspension reason: {reason}" in _log(app, op["id"])  # the sandbox got it

    message = _delivered(smtp_server, "is suspended")[0]
    assert message["to"] == [ids["client"]["email"]]
    assert f"Reason: {reason}" in message["body"]
    assert f"#{service_id}" in message["subject"]

    # the staff page shows it
    login(client, "admin@example.com", "admin-password")
    page = html(client.get(f"/services/{service_id}"))
    assert 'id="suspension-reason"' in page and reason in page

    _act(api, service_id, "resume")
    assert "works again" in _delivered(smtp_server, "is active again")[0]["body"]
    # the reason belongs to the suspension: once resumed it is no longer shown
    assert 'id="suspension-reason"' not in html(client.get(f"/services/{service_id}"))

    current = ids["tariff"]
    bigger = api.ok(
        "post",
        "/tariffs",
        {
            "name": "VPS L",
            "product_type": "vps",
            "price": "29.99",
            "internal_name": f"vps-l-{service_id}",
            "module_ids": [ids["module"]["id"]],
        },
    )
    _act(api, service_id, "change_tariff", {"tariff_id": bigger["id"]})
    moved = _delivered(smtp_server, "is now on VPS L")[0]
    assert f'from "{current["name"]}"' in moved["body"] and 'to "VPS L"' in moved["body"]

    _act(api, service_id, "close")
    assert "has been closed" in _delivered(smtp_server, "is closed")[0]["body"]

    # one email per event, each sent once: the sweep sends nothing again
    with app.app_context():
        from app.db import database

        with database.connection_context():
            mail.sweep()
    for kind in ("suspend", "resume", "change_tariff", "close"):
        emails = _emails_once_recorded(app, service_id, f"notice_{kind}")
        assert [e.status for e in emails] == ["sent"], kind
    assert len(smtp_server.messages) == 5  # welcome + four notices


def test_suspend_without_a_reason_says_so_and_a_long_one_is_refused(app, api, client):
    ids = paid_service(api)
    service_id = ids["service_id"]
    code, body = api.post(f"/services/{service_id}/suspend", {"reason": "x" * 501})
    assert code == 422
    assert body["error"]["fields"] == {"reason": "At most 500 characters."}
    code, body = api.post(f"/services/{service_id}/suspend", {"reason": 7})
    assert code == 422 and body["error"]["fields"] == {"reason": "Must be text."}
    with db(app):
        assert Operation.select().where(Operation.service == service_id).count() == 1

    # the staff form: the field's message, nothing queued
    login(client, "admin@example.com", "admin-password")
    page = html(client.get(f"/services/{service_id}"))
    assert 'id="suspend-form"' in page and 'name="reason"' in page
    response = client.post(f"/services/{service_id}/suspend", data={"reason": "y" * 501})
    assert response.status_code == 422
    assert "At most 500 characters." in html(response)
    with db(app):
        assert Operation.select().where(Operation.service == service_id).count() == 1

    response = client.post(f"/services/{service_id}/suspend", data={"reason": "Abuse report"})
    assert response.status_code == 302
    wait_for(lambda: api.ok("get", f"/services/{service_id}")["status"] == "suspended")
    with db(app):
        op = Operation.get((Operation.service == service_id) & (Operation.kind == "suspend"))
        assert op.params["reason"] == "Abuse report"
        email = Email.get((Email.service == service_id) & (Email.kind == "notice_suspend"))
    assert email.status == "outbox"  # no SMTP server: kept in the outbox
    assert "Reason: Abuse report" in email.body


def _carols_active_service(app, api):
    """A sandbox service of Carol's (a client with a login: carol@example.com /
    carol-password), active; ``(service id, its module)``."""
    make_client_login(app)
    with db(app):
        from app.models import Client

        carol = Client.get(Client.email == "carol@example.com")
    _, module, tariff, _ = api.catalog("sandbox")
    order = api.order(carol.id, tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    return order["service_id"], module


def test_client_sees_the_reason_of_the_suspension(app, api, client):
    service_id, _ = _carols_active_service(app, api)
    _act(api, service_id, "suspend", {"reason": "Unpaid invoice"})
    login(client, "carol@example.com", "carol-password")
    page = html(client.get(f"/my/services/{service_id}"))
    assert "Suspended: Unpaid invoice" in page
    # a new password is for active services only: not offered while suspended
    assert 'id="action-change_password"' not in page
    _act(api, service_id, "resume")
    page = html(client.get(f"/my/services/{service_id}"))
    assert "Suspended" not in page
    assert 'id="action-change_password"' in page


def test_the_client_page_follows_an_operation_that_ends_while_it_is_read(
    app, api, client, monkeypatch, sandbox_hold
):
    """The client's service page reads the open operation before the service: an
    operation that ends between the two reads leaves a page that polls (and its next poll
    shows the new password), never one with the details from before and nothing to poll
    for (a browser test waited for ever on such a page, 1 run in 5 under load)."""
    from app.services import provisioning

    service_id, _ = _carols_active_service(app, api)
    login(client, "carol@example.com", "carol-password")
    before = html(client.get(f"/my/services/{service_id}"))
    assert 'hx-trigger="every 2s"' not in before

    sandbox_hold.hold("change_password")  # open until the page has read it
    assert client.post(f"/my/services/{service_id}/change_password").status_code == 302
    with db(app):
        (op,) = Operation.select().where(
            (Operation.service == service_id) & (Operation.kind == "change_password")
        )
    read_service = provisioning.get_for_client

    def then_the_operation_ends(service_id_, client_id):
        service = read_service(service_id_, client_id)
        sandbox_hold.release()
        api.wait_operation(op.id)  # the worker finishes it right after the service was read
        return service

    monkeypatch.setattr(provisioning, "get_for_client", then_the_operation_ends)
    during = html(client.get(f"/my/services/{service_id}"))
    assert 'hx-trigger="every 2s"' in during  # it was open when the page began: it polls
    monkeypatch.undo()
    after = html(client.get(f"/my/services/{service_id}"))
    assert 'hx-trigger="every 2s"' not in after
    with db(app):
        password = Service.get_by_id(service_id).details["password"]
    assert password in after and password not in before


def test_http_module_sends_the_reason_and_the_new_password(app, api, http_endpoint):
    _, module, tariff, client_ = api.catalog("http", http_endpoint.config(), retry_delay=1)
    order = api.order(client_["id"], tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    service_id = order["service_id"]
    _act(api, service_id, "suspend", {"reason": "Spam sent from it"})
    assert http_endpoint.calls("suspend")[0]["params"]["reason"] == "Spam sent from it"
    _act(api, service_id, "resume")
    op = _act(api, service_id, "change_password", {"password": "Given-by-staff-123"})
    call = http_endpoint.calls("change_password")[0]
    assert call["new_password"] == "Given-by-staff-123"
    assert call["operation_id"] == op["id"]
    assert "Given-by-staff-123" not in _log(app, op["id"])  # masked in the attempt log
    assert api.ok("get", f"/services/{service_id}")["details"]["password"] == ("Given-by-staff-123")


# --- change password --------------------------------------------------------------------


def test_change_password_generated_stored_encrypted_set_and_emailed(app, api, smtp_server):
    app.config["SMTP_URL"] = smtp_server.url
    ids = paid_service(api)
    service_id = ids["service_id"]
    before = api.ok("get", f"/services/{service_id}")["details"]["password"]
    op = _act(api, service_id, "change_password")
    details = api.ok("get", f"/services/{service_id}")["details"]
    new = details["password"]
    assert new != before and len(new) == 24
    with db(app):
        row = Operation.get_by_id(op["id"])
        from app.models import SandboxResource

        panel = SandboxResource.get(
            SandboxResource.remote_id == Service.get_by_id(service_id).remote_id
        )
    assert "password" not in row.params  # never in the operation's parameters
    assert new not in str(row.state) and row.state["new_password"]  # encrypted
    assert panel.details["password"] == new  # the panel has it
    assert new not in _log(app, op["id"])
    message = _delivered(smtp_server, "New password")[0]
    assert f"New password: {new}" in message["body"]
    emails = _emails_once_recorded(app, service_id, "notice_change_password")
    assert [e.status for e in emails] == ["sent"]
    assert len(smtp_server.messages) == 2  # the welcome email and this one


@pytest.mark.parametrize(
    "password", ["short", "has a space in it", "x" * 129, 12345678901234, "päßwörd-long-enough"]
)
def test_a_bad_password_is_refused_with_the_fields_message(app, api, password):
    ids = paid_service(api)
    code, body = api.post(f"/services/{ids['service_id']}/change_password", {"password": password})
    assert code == 422, body
    assert "12 to 128 characters" in body["error"]["fields"]["password"]
    with db(app):
        assert Operation.select().where(Operation.kind == "change_password").count() == 0


def test_staff_change_password_form(app, api, client):
    ids = paid_service(api)
    service_id = ids["service_id"]
    login(client, "admin@example.com", "admin-password")
    page = html(client.get(f"/services/{service_id}"))
    assert 'id="change-password-form"' in page
    response = client.post(f"/services/{service_id}/change_password", data={"password": "a b"})
    assert response.status_code == 422
    assert "12 to 128 characters" in html(response)
    response = client.post(
        f"/services/{service_id}/change_password", data={"password": "Staff-chose-this-1"}
    )
    assert response.status_code == 302
    wait_for(
        lambda: (
            api.ok("get", f"/services/{service_id}")["details"]["password"] == "Staff-chose-this-1"
        )
    )


def test_change_password_only_where_the_module_does_it(app, api, client):
    make_client_login(app)
    with db(app):
        from app.models import Client

        carol = Client.get(Client.email == "carol@example.com")
    department, module, tariff, _ = api.catalog("manual")
    order = api.order(carol.id, tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"], ("waiting_task",))
    task = api.ok("get", f"/tasks?department_id={department['id']}")["tasks"][0]
    fields = {
        "hostname": "h.example",
        "ip": "203.0.113.9",
        "username": "carol",
        "password": "by-hand-pw",
        "panel_url": "https://cp.example/",
    }
    api.ok("post", f"/tasks/{task['id']}/close", {"fields": fields})
    service_id = order["service_id"]
    assert api.ok("get", f"/services/{service_id}")["status"] == "active"
    code, body = api.post(f"/services/{service_id}/change_password", {})
    assert code == 409 and "does not do change password" in body["error"]["message"]
    login(client, "admin@example.com", "admin-password")
    assert 'id="change-password-form"' not in html(client.get(f"/services/{service_id}"))
    client.post("/logout")
    login(client, "carol@example.com", "carol-password")
    page = html(client.get(f"/my/services/{service_id}"))
    assert "action-change_password" not in page
    response = client.post(f"/my/services/{service_id}/change_password", follow_redirects=True)
    assert "does not do change password" in html(response)


def test_client_asks_for_a_new_password_of_their_own_service_only(app, api, client):
    make_client_login(app)
    with db(app):
        from app.models import Client

        carol = Client.get(Client.email == "carol@example.com")
    department, module, tariff, other = api.catalog("sandbox")
    order = api.order(carol.id, tariff["id"])
    _, paid = api.pay(order)
    api.wait_operation(paid["operation_id"])
    service_id = order["service_id"]
    others = api.order(other["id"], tariff["id"])
    _, paid = api.pay(others)
    api.wait_operation(paid["operation_id"])
    before = api.ok("get", f"/services/{service_id}")["details"]["password"]

    login(client, "carol@example.com", "carol-password")
    response = client.post(f"/my/services/{others['service_id']}/change_password")
    assert response.status_code == 404
    response = client.post(f"/my/services/{service_id}/suspend")
    assert response.status_code == 404  # staff only
    response = client.post(f"/my/services/{service_id}/change_password")
    assert response.status_code == 302
    with db(app):
        op = Operation.get(
            (Operation.service == service_id) & (Operation.kind == "change_password")
        )
    assert op.params["requested_by"] == "client carol@example.com"
    api.wait_operation(op.id)
    after = api.ok("get", f"/services/{service_id}")["details"]["password"]
    assert after != before
    assert after in html(client.get(f"/my/services/{service_id}"))
    assert api.ok("get", f"/services/{others['service_id']}")["details"]["password"] != after
    emails = _emails(app, service_id, "notice_change_password")
    assert len(emails) == 1 and after in emails[0].body


def test_change_password_done_by_a_person_gives_the_stored_password(app, api, client):
    """An operation that went to people: closing its task puts the password Provisor
    chose into the details and the email."""
    ids = paid_service(api, config={"fail_first": 5, "permanent_failures": True}, wait=("manual",))
    service_id = ids["service_id"]
    department = ids["department"]["id"]
    task = api.ok("get", f"/tasks?department_id={department}")["tasks"][0]
    fields = {
        "hostname": "h.example",
        "ip": "203.0.113.9",
        "username": "u",
        "password": "first-pw",
        "panel_url": "https://cp.example/",
    }
    api.ok("post", f"/tasks/{task['id']}/close", {"fields": fields})
    op = api.ok("post", f"/services/{service_id}/change_password", {"password": "Chosen-pw-12345"})
    api.wait_operation(op["id"], ("manual",))
    task = api.ok("get", f"/tasks?department_id={department}&status=new")["tasks"][0]
    assert task["operation_id"] == op["id"]
    # the person doing it by hand reads the password to set on the task page
    login(client, "admin@example.com", "admin-password")
    page = html(client.get(f"/tasks/{task['id']}"))
    assert 'id="new-password"' in page and "Chosen-pw-12345" in page
    api.ok("post", f"/tasks/{task['id']}/close", {"fields": {}})
    details = api.ok("get", f"/services/{service_id}")["details"]
    assert details["password"] == "Chosen-pw-12345"
    email = _emails(app, service_id, "notice_change_password")[0]
    assert "New password: Chosen-pw-12345" in email.body


# --- the notices' templates on the product type ------------------------------------------


def test_notice_templates_are_edited_on_the_product_type(app, api, client, smtp_server):
    app.config["SMTP_URL"] = smtp_server.url
    login(client, "admin@example.com", "admin-password")
    page = html(client.get("/catalog/product-types/2/edit"))
    assert 'name="notice_suspend_template"' in page and "Reason: {{ reason }}" in page
    form = {
        "name": "VPS",
        "detail_fields": "hostname | Hostname\nip | IP\nusername | User\n"
        "password | Password | secret\npanel_url | Panel",
        "welcome_subject": "Ready",
        "welcome_template": "Hello",
        "notice_suspend_subject": "Paused: {{ service.id }}",
        "notice_suspend_template": "Because {{ reason }",
    }
    response = client.post("/catalog/product-types/2/edit", data=form)
    assert response.status_code == 422
    assert "Template error" in html(response)
    with db(app):
        assert ProductType.get_by_id(2).notice_templates == {}  # nothing saved
    form["notice_suspend_template"] = "Because {{ reason }}, {{ client.name }}."
    response = client.post("/catalog/product-types/2/edit", data=form)
    assert response.status_code == 302
    with db(app):
        saved = ProductType.get_by_id(2).notice_templates
    assert saved == {
        "suspend": {
            "subject": "Paused: {{ service.id }}",
            "template": "Because {{ reason }}, {{ client.name }}.",
        }
    }
    # the other kinds keep their defaults (shown in the form, not stored)
    page = html(client.get("/catalog/product-types/2/edit"))
    assert "is active again" in page

    ids = paid_service(api)
    _act(api, ids["service_id"], "suspend", {"reason": "maintenance"})
    message = _delivered(smtp_server, f"Paused: {ids['service_id']}")[0]
    assert message["body"].strip() == "Because maintenance, Alice Client."


def test_every_product_type_has_a_default_notice_of_each_kind(app, api):
    ids = paid_service(api)
    with db(app):
        service = Service.get_by_id(ids["service_id"])
        for product_type in ProductType.select():
            for kind in mail.NOTICE_KINDS:
                subject, text = mail.notice_template(product_type, kind)
                assert subject and text
            service.tariff.product_type = product_type
            for kind in mail.NOTICE_KINDS:
                subject, body = mail.render_notice(
                    service, kind, reason="r", old_tariff=service.tariff, password="pw"
                )
                assert f"#{service.id}" in subject and "Alice Client" in body


def test_a_russian_client_gets_the_notices_in_russian(app, api):
    ids = paid_service(api)
    service_id = ids["service_id"]
    with db(app):
        from app.models import Client

        Client.update(language="ru").where(Client.id == ids["client"]["id"]).execute()
    _act(api, service_id, "suspend", {"reason": "Счёт не оплачен"})
    (email,) = _emails(app, service_id, "notice_suspend")
    assert "приостановлена" in email.subject
    assert "Причина: Счёт не оплачен" in email.body
    _act(api, service_id, "resume")
    _act(api, service_id, "change_password")
    (email,) = _emails(app, service_id, "notice_change_password")
    password = api.ok("get", f"/services/{service_id}")["details"]["password"]
    assert email.subject.startswith("Новый пароль")
    assert f"Новый пароль: {password}" in email.body
