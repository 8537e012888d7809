"""The client record (staff), password resets, viewing the client area as a client, and
the staff dashboard, through Flask's test client and the API."""

import datetime as dt
import re

from app.models import (
    ClientNote,
    Email,
    Impersonation,
    Operation,
    PasswordReset,
    ProxyClientSide,
    Service,
    User,
    utcnow,
)
from tests.support import db, html, login, make_client_login, make_staff, paid_service, wait_for


def _reset_link(app, to):
    """The path of the newest reset link emailed to ``to`` (from the outbox)."""
    with db(app):
        email = (
            Email.select()
            .where((Email.to == to) & (Email.kind == "password_reset"))
            .order_by(Email.id.desc())
            .first()
        )
    assert email is not None, f"no reset email to {to}"
    return re.search(r"https?://[^/\s]+(/reset-password/\S+)", email.body).group(1)


# --- contact details and notes ----------------------------------------------------------


def test_contact_edit_says_each_bad_field_and_changes_nothing(app, client, admin):
    client_id = make_client_login(app)
    page = client.get(f"/clients/{client_id}")
    assert page.status_code == 200 and "Contact details" in html(page)
    bad = {
        "name": "",
        "email": "not-an-email",
        "phone": "call me",
        "company": "Carol Ltd",
        "address": "1 Main St",
        "country": "Germany",
        "language": "en",
    }
    response = client.post(f"/clients/{client_id}/contact", data=bad)
    body = html(response)
    assert response.status_code == 422
    assert 'id="err-email">Must be an email address.' in body
    assert 'id="err-name">This field is required.' in body
    assert 'id="err-phone">Must be a phone number' in body
    assert 'id="err-country">' in body
    assert 'value="Carol Ltd"' in body  # what was typed is kept
    with db(app):
        assert User.get(User.client == client_id).email == "carol@example.com"

    good = {**bad, "name": "Carol C", "email": "Carol@New.example", "phone": "+49 30 1234"}
    good["country"] = "de"
    response = client.post(f"/clients/{client_id}/contact", data=good)
    assert response.status_code == 302
    status, data = admin.get(f"/clients/{client_id}")
    assert status == 200
    assert (data["name"], data["email"], data["phone"], data["country"]) == (
        "Carol C",
        "carol@new.example",
        "+49 30 1234",
        "DE",
    )
    # the login moved with the email: the client logs in with the new one
    client.post("/logout")
    login(client, "carol@new.example", "carol-password")


def test_contact_and_notes_through_the_api(any_app, any_api):
    app, admin = any_app, any_api
    client_id = make_client_login(app)
    make_client_login(app, email="dave@example.com", name="Dave")
    status, data = admin.put(
        f"/clients/{client_id}", {"name": "Carol", "email": "dave@example.com"}
    )
    assert status == 422, data
    assert data["error"]["fields"]["email"] == "An account with this email exists."
    status, data = admin.put(f"/clients/{client_id}", {"name": "Carol", "email": "x", "phone": 5})
    assert status == 422 and set(data["error"]["fields"]) == {"email", "phone"}
    status, data = admin.put(
        f"/clients/{client_id}",
        {"name": "Carol", "email": "carol@example.com", "company": "Acme Hosting"},
    )
    assert status == 200 and data["company"] == "Acme Hosting" and data["phone"] == ""
    status, data = admin.get("/clients?q=acme")
    assert status == 200 and [c["id"] for c in data["clients"]] == [client_id]
    # what is not given stays; a contact field given empty (or null) is emptied
    admin.ok("put", f"/clients/{client_id}", {"phone": "+1 555 0100", "country": "fr"})
    data = admin.ok("put", f"/clients/{client_id}", {"language": "ru", "company": ""})
    assert (data["phone"], data["country"], data["company"], data["language"]) == (
        "+1 555 0100",
        "FR",
        "",
        "ru",
    )
    assert admin.ok("put", f"/clients/{client_id}", {"phone": None})["phone"] == ""

    status, data = admin.post(f"/clients/{client_id}/notes", {"text": "  "})
    assert status == 422 and data["error"]["fields"] == {"text": "Write a note."}
    status, note = admin.post(f"/clients/{client_id}/notes", {"text": "Prefers email."})
    assert status == 201 and note["author"] == "admin@example.com"
    status, data = admin.get(f"/clients/{client_id}/notes")
    assert status == 200 and [n["text"] for n in data["notes"]] == ["Prefers email."]
    assert admin.get("/clients/999999/notes")[0] == 404
    # the record and the dashboard's queries, on this database too
    from app.services import clients, dashboard

    with db(app):
        record = clients.record(client_id)
        user = User.get(User.email == "admin@example.com")
        counts = dashboard.attention(user)
        steps = dashboard.checklist()
    assert record["services_total"] == 0 and record["eligible"] == {"suspend": 0, "close": 0}
    assert set(counts.values()) == {0} and "peers_in_error" in counts
    assert [done for _, done in steps] == [False, False, False, False]


def test_a_note_shows_with_author_and_time(app, client, admin):
    client_id = make_client_login(app)
    response = client.post(f"/clients/{client_id}/notes", data={"text": ""})
    assert response.status_code == 422 and "Write a note." in html(response)
    response = client.post(f"/clients/{client_id}/notes", data={"text": "Called about VPS."})
    assert response.status_code == 302
    body = html(client.get(f"/clients/{client_id}"))
    assert "Called about VPS." in body and "admin@example.com" in body
    with db(app):
        note = ClientNote.get()
    assert note.created_at.strftime("%Y-%m-%d %H:%M") in body


def test_the_record_lists_orders_services_and_emails(app, client, admin):
    ids = paid_service(admin)
    client.get("/")  # the admin's page session
    body = html(client.get(f"/clients/{ids['client']['id']}"))
    assert f"/services/{ids['service_id']}" in body
    assert f"#{ids['order']['id']}" in body
    with db(app):
        emails = [e.id for e in Email.select().where(Email.service == ids["service_id"])]
    assert emails and all(f"/outbox/{e}" in body for e in emails)
    # the services and orders lists link to the record
    record = f'href="/clients/{ids["client"]["id"]}"'
    assert record in html(client.get("/services")) and record in html(client.get("/orders"))


# --- passwords --------------------------------------------------------------------------


def test_staff_send_a_reset_link_and_the_client_sets_a_new_password(app, client, admin):
    client_id = make_client_login(app)
    assert client.post(f"/clients/{client_id}/password/reset").status_code == 302
    path = _reset_link(app, "carol@example.com")
    client.post("/logout")
    anonymous = app.test_client()
    assert anonymous.get(path).status_code == 200
    response = anonymous.post(path, data={"password": "short", "password_repeat": "short"})
    assert response.status_code == 422 and "At least 8 characters." in html(response)
    response = anonymous.post(
        path, data={"password": "brand-new-pw", "password_repeat": "brand-new-pw"}
    )
    assert response.status_code == 302
    login(anonymous, "carol@example.com", "brand-new-pw")
    assert anonymous.get(path).status_code == 404  # used: it works once
    assert "This link does not work" in html(app.test_client().get(path))


def test_forgot_password_sends_a_link_that_expires(app, client):
    make_client_login(app)
    assert "Forgot password?" in html(client.get("/login"))
    response = client.post("/forgot-password", data={"email": "nobody@example.com"})
    assert response.status_code == 302  # the same answer for an unknown address
    response = client.post("/forgot-password", data={"email": "nonsense"})
    assert response.status_code == 422 and "Must be an email address." in html(response)
    client.post("/forgot-password", data={"email": "CAROL@example.com"})
    path = _reset_link(app, "carol@example.com")
    client.post("/forgot-password", data={"email": "carol@example.com"})  # within the pause
    with db(app):
        assert PasswordReset.select().count() == 1
        assert Email.select().where(Email.to == "nobody@example.com").count() == 0
        PasswordReset.update(expires_at=utcnow() - dt.timedelta(seconds=1)).execute()
    response = client.post(
        path, data={"password": "brand-new-pw", "password_repeat": "brand-new-pw"}
    )
    assert response.status_code == 404
    assert (
        client.post(
            "/login", data={"email": "carol@example.com", "password": "brand-new-pw"}
        ).status_code
        == 422
    )


def test_staff_set_a_password_and_a_client_without_login_gets_one(app, client, admin):
    status, data = admin.post("/clients", {"name": "Erin", "email": "erin@example.com"})
    assert status == 201
    page = client.post(f"/clients/{data['id']}/password/reset")
    assert page.status_code == 422 and "has no login yet" in html(page)
    form = {"password": "erin-password", "password_repeat": "erin-passw0rd"}
    page = client.post(f"/clients/{data['id']}/password", data=form)
    assert page.status_code == 422 and "The two passwords differ." in html(page)
    form["password_repeat"] = "erin-password"
    assert client.post(f"/clients/{data['id']}/password", data=form).status_code == 302
    client.post("/logout")
    login(client, "erin@example.com", "erin-password")
    assert client.get("/").headers["Location"] == "/my"


# --- suspend all, close all -------------------------------------------------------------


def test_suspend_all_queues_the_suspend_of_each_active_service(app, client, admin):
    first = paid_service(admin)
    client_id = first["client"]["id"]
    order = admin.order(client_id, first["tariff"]["id"])
    status, body = admin.pay(order)
    admin.wait_operation(body["operation_id"], ("done",))
    client.get("/")
    assert "Suspend all (2)" in html(client.get(f"/clients/{client_id}"))
    response = client.post(f"/clients/{client_id}/services/suspend")
    assert response.status_code == 302
    with db(app):
        kinds = [
            (op.service_id, op.kind)
            for op in Operation.select().where(Operation.kind == "suspend").order_by(Operation.id)
        ]
    assert kinds == [(first["service_id"], "suspend"), (order["service_id"], "suspend")]

    def suspended():
        with db(app):
            return {s.status for s in Service.select()} == {"suspended"}

    wait_for(suspended, message="both services suspended")
    body = html(client.get(f"/clients/{client_id}"))
    assert "Suspend all (0)" in body and "Close all (2)" in body
    assert client.post(f"/clients/{client_id}/services/resume").status_code == 404


# --- viewing the client area as the client ----------------------------------------------


def test_viewing_as_a_client_is_read_only_logged_and_ends(app, client, admin):
    ids = paid_service(admin)
    client_id = ids["client"]["id"]
    client.get("/")
    assert client.get("/my").status_code == 403  # staff without viewing as a client
    response = client.post(f"/clients/{client_id}/view-as")
    assert response.status_code == 302 and response.headers["Location"] == "/my"
    body = html(client.get("/my"))
    assert "You are viewing the client area as" in body
    assert f"/my/services/{ids['service_id']}" in body
    assert client.get(f"/my/services/{ids['service_id']}").status_code == 200
    # every POST is refused, in the client area and outside it
    assert client.post("/my/order", data={"tariff_id": ids["tariff"]["id"]}).status_code == 403
    assert client.post(f"/clients/{client_id}/notes", data={"text": "x"}).status_code == 403
    with db(app):
        assert ClientNote.select().count() == 0
        row = Impersonation.get()
        assert (row.client_id, row.staff_email) == (client_id, "admin@example.com")
    response = client.post("/view-as/stop")
    assert response.headers["Location"] == f"/clients/{client_id}"
    body = html(client.get(f"/clients/{client_id}"))
    assert "You are viewing the client area as" not in body
    assert 'id="impersonations"' in body and "admin@example.com" in body
    assert client.get("/my").status_code == 403


# --- the dashboard ----------------------------------------------------------------------


def _count(body, tile):
    return int(re.search(rf'id="{tile}"[^>]*>\s*<span class="tile-count">(\d+)', body).group(1))


def test_staff_land_on_the_dashboard_with_counts_linking_to_lists(app, client, admin):
    body = html(client.get("/dashboard"))
    assert 'id="first-run"' in body
    assert [_count(body, t) for t in ("count-manual", "count-tasks", "count-emails")] == [0, 0, 0]
    ids = paid_service(
        admin, config={"fail_first": 5, "permanent_failures": True}, wait=("manual",)
    )
    with db(app):
        Service.update(updated_at=utcnow() - dt.timedelta(hours=2)).execute()
        ProxyClientSide.insert(
            url="http://127.0.0.1:9",
            login="x",
            password_encrypted="x",
            remote_department_id=1,
            department=ids["department"]["id"],
            last_error="connection refused",
        ).execute()
    body = html(client.get("/dashboard"))
    assert _count(body, "count-manual") == 1
    assert _count(body, "count-tasks") == 1
    assert _count(body, "count-stuck") == 1
    assert _count(body, "count-peers") == 1
    assert 'href="/operations?status=manual"' in body
    assert 'href="/services?stuck=1"' in body
    assert 'href="/outbox?status=retry_wait"' in body
    stuck = html(client.get("/services?stuck=1"))
    assert f"/services/{ids['service_id']}" in stuck
    with db(app):
        Service.update(updated_at=utcnow()).execute()
    assert f"/services/{ids['service_id']}" not in html(client.get("/services?stuck=1"))
    # every step done (department, module, tariff, an order): the checklist is gone
    assert 'id="first-run"' not in body


def test_open_tasks_count_only_my_departments(app, client, admin):
    ids = paid_service(
        admin, config={"fail_first": 5, "permanent_failures": True}, wait=("manual",)
    )
    make_staff(app, "sam@example.com", [ids["department"]["id"]])
    make_staff(app, "olga@example.com")
    client.post("/logout")
    login(client, "sam@example.com", "staff-password")
    assert client.get("/").headers["Location"] == "/dashboard"
    body = html(client.get("/dashboard"))
    assert _count(body, "count-tasks") == 1 and 'id="count-peers"' not in body
    client.post("/logout")
    login(client, "olga@example.com", "staff-password")
    assert _count(html(client.get("/dashboard")), "count-tasks") == 0


def test_reset_links_use_the_public_url_whatever_the_host_header(app, client):
    make_client_login(app)
    app.config["PUBLIC_URL"] = "https://panel.example.com/"
    response = client.post(
        "/forgot-password", data={"email": "carol@example.com"}, headers={"Host": "evil.example"}
    )
    assert response.status_code == 302
    with db(app):
        body = Email.get(Email.kind == "password_reset").body
    assert "https://panel.example.com/reset-password/" in body and "evil.example" not in body
