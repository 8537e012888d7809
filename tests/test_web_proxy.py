"""The tasks proxy pages (/proxy) through Flask's test client.

The remote instance is this same app's proxy server (``/proxy/v1``) served by werkzeug on
a loopback port: the client side talks to it over real HTTP, a server side of the same
database answers, and the embedded worker pushes the forwarded tasks to it.
"""

import re
import threading

import pytest
from flask import render_template
from flask_login import login_user
from werkzeug.serving import make_server

from app.models import ProxyInbound, ProxyLink, Service, Task, User
from tests.support import ADMIN, PEER_PASSWORD, db, free_port, html, login, make_staff, wait_for

HTMX_STEP = {"HX-Request": "true", "HX-Target": "remote-departments"}
DETAILS = {
    "hostname": "vps42.upstream.example",
    "ip": "198.51.100.42",
    "username": "root",
    "password": "upstream-pw",
}


@pytest.fixture
def peer(app):
    """This app served on a loopback port: its /proxy/v1 is the remote instance."""
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_port}"
    yield server
    server.shutdown()
    thread.join(5)


def flashes(response):
    return re.findall(r'class="alert alert-(\w+)" role="\w+">([^<]*)<', html(response))


def server_side(client, login_, department_id, password=PEER_PASSWORD):
    return client.post(
        "/proxy/server-sides",
        data={
            "server.login": login_,
            "server.password": password,
            "server.department_id": str(department_id),
        },
    )


def peer_form(url, login_="reseller-1", password=PEER_PASSWORD, **extra):
    return {"client.url": url, "client.login": login_, "client.password": password, **extra}


def error_of(body, field):
    """The error shown under a field of the page (None when there is none)."""
    match = re.search(rf'<p class="field-error" id="err-{re.escape(field)}">([^<]*)</p>', body)
    return match.group(1) if match else None


# --- access ----------------------------------------------------------------------------------


def test_proxy_page_is_for_admins(app, client, api):
    response = client.get("/proxy")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    response = client.post("/proxy/check")
    assert response.status_code == 302 and "/login" in response.headers["Location"]

    department = api.ok("post", "/departments", {"name": "Support"})
    make_staff(app, "sam@example.com", [department["id"]])
    login(client, "sam@example.com", "staff-password")
    assert "/proxy" not in html(client.get("/tasks"))  # no nav entry for staff
    for method, path in (
        ("get", "/proxy"),
        ("post", "/proxy/check"),
        ("post", "/proxy/server-sides"),
        ("post", "/proxy/client-sides"),
        ("post", "/proxy/client-sides/departments"),
        ("post", "/proxy/client-sides/1/check"),
    ):
        response = getattr(client, method)(path)
        assert response.status_code == 403, path
        assert response.mimetype == "text/html" and "Not allowed" in html(response), path

    client.post("/logout")
    login(client, *ADMIN)
    body = html(client.get("/proxy"))
    assert 'href="/proxy"' in body and 'aria-current="page">Proxy<' in body
    assert "Client sides" in body and "Server sides" in body
    assert "No client side yet." in body and "No server side yet." in body
    assert "Check all now" not in body  # nothing to check
    response = client.post("/proxy/client-sides/99/check")
    assert response.status_code == 404 and "Client side 99 not found." in html(response)


# --- server sides ----------------------------------------------------------------------------


def test_server_side_list_and_one_department_per_server_side(app, client, admin):
    dc = admin.ok("post", "/departments", {"name": "DC"})
    response = server_side(client, "reseller-1", dc["id"])
    assert response.status_code == 302
    page = client.get(response.headers["Location"])
    assert ("success", "Server side reseller-1 created: its tasks go to DC.") in flashes(page)
    row = re.search(r'<tr id="server-side-\d+">(.*?)</tr>', html(page), re.S).group(1)
    assert "reseller-1" in row and "DC" in row and "never" in row
    assert PEER_PASSWORD not in html(page)

    # the same department again: the error is by the department select, the rest kept
    response = server_side(client, "reseller-2", dc["id"])
    body = html(response)
    assert response.status_code == 422
    assert error_of(body, "server-department_id") == (
        "This department already serves another server side."
    )
    assert 'id="f-server-department_id" name="server.department_id" aria-invalid="true"' in body
    assert 'value="reseller-2"' in body  # the login is kept...
    assert PEER_PASSWORD not in body  # ...the password is never filled back in
    assert "DC — serves reseller-1" in body
    # a short password, a taken login and no department at once
    other = admin.ok("post", "/departments", {"name": "Other"})
    body = html(server_side(client, "reseller-1", "", password="short"))
    assert error_of(body, "server-login") == "A server side with this login exists."
    assert error_of(body, "server-password") == "At least 8 characters."
    assert error_of(body, "server-department_id") == "Choose an existing department."
    assert server_side(client, "reseller-2", other["id"]).status_code == 302
    with db(app):
        from app.services import proxy

        assert [s.login for s in proxy.server_sides()] == ["reseller-1", "reseller-2"]


# --- the "Load remote departments" step ------------------------------------------------------


def test_load_remote_departments_lists_them_or_says_why_not(app, client, admin, peer, caplog):
    dc = admin.ok("post", "/departments", {"name": "DC"})
    assert server_side(client, "reseller-1", dc["id"]).status_code == 302

    response = client.post(
        "/proxy/client-sides/departments", data=peer_form(peer.url), headers=HTMX_STEP
    )
    body = html(response)
    assert response.status_code == 200
    assert body.lstrip().startswith('<div id="remote-departments"')  # the partial only
    assert f'<option value="{dc["id"]}" selected>DC (#{dc["id"]})</option>' in body
    assert 'name="client.remote_department_id"' in body
    assert PEER_PASSWORD not in body

    # wrong password, unknown login: said plainly, in the partial (htmx swaps a 200)
    for login_, password in (("reseller-1", "wrong-password"), ("nobody", PEER_PASSWORD)):
        response = client.post(
            "/proxy/client-sides/departments",
            data=peer_form(peer.url, login_, password),
            headers=HTMX_STEP,
        )
        body = html(response)
        assert response.status_code == 200
        assert re.search(
            rf'id="remote-error">{re.escape(peer.url)} refused the login &#39;{login_}&#39;: '
            r"wrong login or password<",
            body,
        ), body
        assert "client.remote_department_id" not in body and "wrong-password" not in body

    # nothing listens there
    nowhere = f"http://127.0.0.1:{free_port()}"
    body = html(
        client.post("/proxy/client-sides/departments", data=peer_form(nowhere), headers=HTMX_STEP)
    )
    assert f'id="remote-error">cannot reach {nowhere} (ConnectionError)<' in body
    # something that is not a Provisor
    body = html(
        client.post(
            "/proxy/client-sides/departments",
            data=peer_form(peer.url + "/no-such-place"),
            headers=HTMX_STEP,
        )
    )
    assert 'id="remote-error"' in body and "404" in body
    # missing settings
    body = html(
        client.post(
            "/proxy/client-sides/departments",
            data={"client.url": "ftp://x", "client.login": ""},
            headers=HTMX_STEP,
        )
    )
    assert "URL: Must be an http:// or https:// URL of the remote Provisor." in body
    assert "Login: This field is required." in body and "Password: This field is required." in body

    # without htmx (no JavaScript) the same step answers the whole page, the form kept
    response = client.post(
        "/proxy/client-sides/departments", data=peer_form(peer.url, "reseller-1")
    )
    body = html(response)
    assert response.status_code == 200 and "<html" in body
    assert f'value="{peer.url}"' in body and 'value="reseller-1"' in body
    assert f"DC (#{dc['id']})" in body and PEER_PASSWORD not in body
    assert PEER_PASSWORD not in caplog.text and "wrong-password" not in caplog.text


def test_non_ascii_login_and_password_work_as_utf8(app, client, admin, peer):
    """HTTP Basic as the peer reads it: UTF-8. The client side sent Latin-1 (requests'
    default), which failed with a 500 on anything beyond it (Cyrillic, CJK, emoji)."""
    dc = admin.ok("post", "/departments", {"name": "DC"})
    upstream = admin.ok("post", "/departments", {"name": "Upstream"})
    login_, password = "реселлер-1", "пароль-密码-🔑-é"
    assert server_side(client, login_, dc["id"], password).status_code == 302

    response = client.post(
        "/proxy/client-sides/departments", data=peer_form(peer.url, login_, password)
    )
    body = html(response)
    assert response.status_code == 200
    assert f"DC (#{dc['id']})" in body and 'id="remote-error"' not in body
    # a wrong non-ASCII password is a wrong password, said plainly
    body = html(
        client.post("/proxy/client-sides/departments", data=peer_form(peer.url, login_, "пароль-2"))
    )
    assert "wrong login or password" in body

    data = peer_form(peer.url, login_, password)
    data.update(
        {"client.remote_department_id": str(dc["id"]), "client.department_id": str(upstream["id"])}
    )
    response = client.post("/proxy/client-sides", data=data)
    assert response.status_code == 302, html(response)
    with db(app):
        from app.services import proxy

        (side,) = proxy.client_sides()
        assert proxy.pull(side.id) == 0  # the stored password logs in too


def test_a_login_with_a_colon_is_refused_on_both_forms(app, client, admin, peer):
    """HTTP Basic ends the login at the first ':': such a login could never log in."""
    dc = admin.ok("post", "/departments", {"name": "DC"})
    response = server_side(client, "reseller:1", dc["id"])
    assert response.status_code == 422
    assert error_of(html(response), "server-login") == (
        "Cannot contain a colon (HTTP Basic ends the login there)."
    )
    body = html(
        client.post("/proxy/client-sides/departments", data=peer_form(peer.url, "reseller:1"))
    )
    assert "Login: Cannot contain a colon (HTTP Basic ends the login there)." in body


# --- saving a client side ------------------------------------------------------------------------


def test_save_client_side_and_field_errors(app, client, admin, peer, caplog):
    dc = admin.ok("post", "/departments", {"name": "DC"})
    upstream = admin.ok("post", "/departments", {"name": "Upstream"})
    private = admin.ok("post", "/departments", {"name": "Private"})
    assert server_side(client, "reseller-1", dc["id"]).status_code == 302

    def save(**fields):
        data = peer_form(peer.url)
        data.update(
            {
                "client.remote_department_id": str(dc["id"]),
                "client.department_id": str(upstream["id"]),
            }
        )
        data.update({f"client.{k}": v for k, v in fields.items()})
        return client.post("/proxy/client-sides", data=data)

    # the remote refuses the login: by the password field, nothing saved
    response = save(password="wrong-password")
    body = html(response)
    assert response.status_code == 422
    assert "wrong login or password" in error_of(body, "client-password")
    assert "wrong-password" not in body
    # nothing listens there: by the URL field
    nowhere = f"http://127.0.0.1:{free_port()}"
    body = html(save(url=nowhere))
    assert error_of(body, "client-url") == f"cannot reach {nowhere} (ConnectionError)"
    # a department the remote does not offer to this login
    body = html(save(remote_department_id=str(private["id"])))
    assert error_of(body, "client-remote_department_id") == (
        "The remote instance does not offer this department to this login."
    )
    assert f"DC (#{dc['id']})" in body  # the offered ones are listed again
    # no local department chosen
    body = html(save(department_id=""))
    assert error_of(body, "client-department_id") == (
        "Choose the local department whose tasks are forwarded."
    )
    assert f'value="{peer.url}"' in body and PEER_PASSWORD not in body
    with db(app):
        from app.services import proxy

        assert proxy.client_sides() == []

    response = save()
    assert response.status_code == 302
    page = client.get(response.headers["Location"])
    body = html(page)
    assert (
        "success",
        f"Client side created: tasks of Upstream go to {peer.url} (DC).",
    ) in flashes(page)
    row = re.search(r'<tr id="client-side-\d+" data-state="ok">(.*?)</tr>', body, re.S).group(1)
    cells = [
        re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", c)).strip()
        for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    ]
    assert cells[:5] == [peer.url, "reseller-1", f"DC #{dc['id']}", "Upstream", "0"]
    assert "not synced yet" in row and "Check now" in row
    assert "Check all now" in body and PEER_PASSWORD not in body

    # the same local department twice: by the local department select
    body = html(save())
    assert error_of(body, "client-department_id") == (
        "This department is already forwarded by another client side."
    )
    assert PEER_PASSWORD not in caplog.text and "wrong-password" not in caplog.text


# --- check now -------------------------------------------------------------------------------


def test_check_now_brings_the_remote_close_back_or_shows_the_error(app, client, admin, peer):
    # a manual module: the service's setup is a task of its department, "Upstream"
    upstream, _, tariff, customer = admin.catalog("manual")
    dc = admin.ok("post", "/departments", {"name": "DC"})
    assert server_side(client, "reseller-1", dc["id"]).status_code == 302
    response = client.post(
        "/proxy/client-sides",
        data=peer_form(
            peer.url,
            **{"client.remote_department_id": dc["id"], "client.department_id": upstream["id"]},
        ),
    )
    assert response.status_code == 302
    with db(app):
        from app.services import proxy

        side_id = proxy.client_sides()[0].id

    order = admin.order(customer["id"], tariff["id"])
    status, paid = admin.pay(order)
    assert status == 200, paid
    admin.wait_operation(paid["operation_id"], ("waiting_task",))
    with db(app):
        local = Task.get(Task.operation == paid["operation_id"])

    def received():
        with db(app):
            inbound = ProxyInbound.get_or_none()
            return inbound.task_id if inbound else None

    remote_id = wait_for(received, timeout=15, message="the task pushed to the peer")

    # nothing new yet: a check says so
    page = client.post(f"/proxy/client-sides/{side_id}/check", follow_redirects=True)
    assert ("success", f"0 changes brought back from {peer.url}.") in flashes(page)

    # the provider's staff work on it there and close it with the details
    admin.ok("post", f"/tasks/{remote_id}/assign", {})
    admin.ok("post", f"/tasks/{remote_id}/close", {"fields": DETAILS})
    page = client.post(
        f"/proxy/client-sides/{side_id}/check",
        data={"next": f"/tasks/{local.id}"},
        follow_redirects=True,
    )
    assert page.request.path == f"/tasks/{local.id}"
    assert ("success", f"2 changes brought back from {peer.url}.") in flashes(page)
    with db(app):
        assert Task.get_by_id(local.id).status == "closed"
        service = Service.get_by_id(order["service_id"])
        assert service.status == "active" and service.details == DETAILS
    body = html(client.get("/proxy"))
    assert 'data-state="ok"' in body and re.search(r'<td class="num">2</td>', body)

    # the peer goes away: the check says why, and /proxy shows the failing peer
    peer.shutdown()
    page = client.post(f"/proxy/client-sides/{side_id}/check", follow_redirects=True)
    assert (
        "error",
        f"Checking {peer.url} failed: cannot reach {peer.url} (ConnectionError)",
    ) in flashes(page)
    body = html(client.get("/proxy"))
    assert f'id="client-side-{side_id}" data-state="failing"' in body
    assert re.search(
        rf'id="client-side-{side_id}-error">.*pull: cannot reach {re.escape(peer.url)}', body, re.S
    )
    assert "1 of 1 remote instance failing:" in body
    page = client.post("/proxy/check", follow_redirects=True)
    assert (
        "error",
        f"Checking {peer.url} failed: cannot reach {peer.url} (ConnectionError)",
    ) in flashes(page)
    # a "next" elsewhere is ignored
    response = client.post(
        f"/proxy/client-sides/{side_id}/check", data={"next": "https://evil.example/"}
    )
    assert response.headers["Location"].endswith("/proxy")


def test_check_all_with_no_client_side(client, admin):
    page = client.post("/proxy/check", follow_redirects=True)
    assert ("info", "No client side to check.") in flashes(page)


# --- the proxy part of a task page ----------------------------------------------------------------


def test_task_link_partial_for_forwarded_and_received_tasks(app, admin):
    from app.models import ProxyClientSide, utcnow
    from app.services import proxy

    dc = admin.ok("post", "/departments", {"name": "DC"})
    upstream = admin.ok("post", "/departments", {"name": "Upstream"})
    now = utcnow()
    with db(app):
        side = proxy.create_server_side(
            {"login": "provider-a", "password": PEER_PASSWORD, "department_id": dc["id"]}
        )
        received, _ = proxy.receive_task(
            side,
            {
                "sender_task_id": 77,
                "department_id": dc["id"],
                "title": "Rack a server",
                "description": "Rack it in row 4.",
            },
        )
        client_side = ProxyClientSide.create(
            url="http://upstream.example",
            login="reseller-1",
            password_encrypted=proxy.encrypt(PEER_PASSWORD),
            remote_department_id=5,
            remote_department_name="Remote DC",
            department=upstream["id"],
        )
        forwarded = Task.create(
            department=upstream["id"], title="Forwarded", created_at=now, updated_at=now
        )
        ProxyLink.create(
            task=forwarded,
            client_side=client_side,
            remote_task_id=31,
            last_synced_at=now,
            sync_error="push: cannot reach http://upstream.example (ConnectionError)",
        )
        plain = Task.create(department=dc["id"], title="Plain", created_at=now, updated_at=now)
        admin_id = User.get(User.email == ADMIN[0]).id
    staff_id = make_staff(app, "sam@example.com", [dc["id"], upstream["id"]])

    def render(task, user_id):
        with app.test_request_context("/"):  # (its teardown closes the connection)
            login_user(User.get_by_id(user_id))
            return render_template("proxy/_task_link.html", task=Task.get_by_id(task.id))

    def text_of(body):
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", body))

    text = text_of(render(forwarded, admin_id))
    assert re.search(
        r"Forwarded to http://upstream\.example \(Remote DC\), remote task #31, "
        r"last sync (now|\d+ s ago)\.",
        text,
    )
    assert "Sync error: push: cannot reach http://upstream.example" in text
    body = render(forwarded, admin_id)
    assert f'action="/proxy/client-sides/{client_side.id}/check"' in body
    assert f'name="next" value="/tasks/{forwarded.id}"' in body
    assert PEER_PASSWORD not in body
    staff_view = render(forwarded, staff_id)
    assert "Forwarded to" in staff_view and "Check now" not in staff_view

    text = text_of(render(received, admin_id))
    assert "Received from provider-a (their task #77)." in text
    assert "Rack it in row 4." in text and "Check now" not in text
    assert render(plain, admin_id).strip() == ""
