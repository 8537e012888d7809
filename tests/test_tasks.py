"""People take over: tasks, rights, the assign race, the manual setup module, notifications."""

import threading

import pytest
from werkzeug.serving import make_server

from app.db import database
from app.services import accounts
from tests.support import Api, free_port, wait_for


def _staff(app, email, department_ids, role="staff"):
    """A staff member (or admin) of these departments with an API token."""
    with app.app_context(), database.connection_context():
        accounts.create_user(
            {
                "email": email,
                "name": email.split("@")[0].title(),
                "password": "staff-password",
                "department_ids": department_ids,
            },
            role=role,
        )
        return accounts.create_token(email)


@pytest.fixture
def escalated(app, api):
    """A service whose open operation escalated to a task in department A."""
    dept_a, module, tariff, client = api.catalog(
        "sandbox", {"fail_first": 9, "permanent_failures": True}, product_type="vps"
    )
    dept_b = api.ok("post", "/departments", {"name": "Other department"})
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"], ("manual",))
    task = api.ok("get", f"/tasks?operation_id={op['id']}&department_id={dept_a['id']}")["tasks"][0]
    return {
        "dept_a": dept_a,
        "dept_b": dept_b,
        "module": module,
        "tariff": tariff,
        "client": client,
        "order": order,
        "op": op,
        "task": task,
    }


VPS_FIELDS = {
    "hostname": "vps1.example",
    "ip": "203.0.113.8",
    "username": "root",
    "password": "by-hand",
}


def test_api_rights_on_tasks(app, client, api, escalated):
    """Anonymous → 401; staff of another department → 403 and sees nothing; staff of the
    department and admins → allowed. Clients have no API tokens at all."""
    task_id = escalated["task"]["id"]
    mine = Api(client, _staff(app, "a@example.com", [escalated["dept_a"]["id"]]))
    other = Api(client, _staff(app, "b@example.com", [escalated["dept_b"]["id"]]))
    anonymous = Api(client, "not-a-token")
    actions = [
        ("get", f"/tasks/{task_id}", None),
        ("post", f"/tasks/{task_id}/comment", {"text": "looking"}),
        ("post", f"/tasks/{task_id}/assign", {}),
        ("post", f"/tasks/{task_id}/close", {"fields": VPS_FIELDS}),
    ]

    def call(who, method, path, body):
        return who.get(path) if method == "get" else who.post(path, body)

    for method, path, body in actions:
        assert call(anonymous, method, path, body)[0] == 401
        code, data = call(other, method, path, body)
        assert code == 403, (path, data)
        assert data["error"]["code"] == "forbidden"
    assert other.ok("get", "/tasks")["tasks"] == []
    assert other.get(f"/tasks?department_id={escalated['dept_a']['id']}")[1]["tasks"] == []
    assert [t["id"] for t in mine.ok("get", "/tasks")["tasks"]] == [task_id]
    assert other.post(f"/tasks/{task_id}/reopen")[0] == 403  # admins only
    # the task was untouched by the refused calls
    task = api.ok("get", f"/tasks/{task_id}")
    assert task["status"] == "new" and task["assignee_id"] is None
    # staff of the department acts
    mine.ok("post", f"/tasks/{task_id}/comment", {"text": "on it"})
    mine.ok("post", f"/tasks/{task_id}/assign", {})
    mine.ok("post", f"/tasks/{task_id}/close", {"fields": VPS_FIELDS})
    assert api.ok("get", f"/services/{escalated['order']['service_id']}")["status"] == "active"
    # staff cannot use the admin API; clients cannot get a token
    assert mine.post("/departments", {"name": "X"})[0] == 403
    with app.app_context(), database.connection_context():
        accounts.create_client(
            {"name": "C", "email": "c@example.com", "password": "client-password"}, with_login=True
        )
        with pytest.raises(Exception) as refused:
            accounts.create_token("c@example.com")
    assert "staff" in str(refused.value)


def _serve(app):
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


def _race(app, rounds, tokens, make_task):
    """Two people click "Assign to me" at the same moment; exactly one may win."""
    import requests

    server = _serve(app)
    base = f"http://127.0.0.1:{server.server_port}/api/v1"
    try:
        for _ in range(rounds):
            task_id = make_task()
            barrier = threading.Barrier(len(tokens))
            answers = {}

            def click(token, task_id=task_id, barrier=barrier, answers=answers):
                barrier.wait()
                response = requests.post(
                    f"{base}/tasks/{task_id}/assign",
                    json={},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=10,
                )
                answers[token] = (response.status_code, response.json())

            threads = [threading.Thread(target=click, args=(t,)) for t in tokens]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            codes = sorted(code for code, _ in answers.values())
            assert codes == [200, 409], answers
            winner = next(body for code, body in answers.values() if code == 200)
            loser = next(body for code, body in answers.values() if code == 409)
            names = {"A@Example.Com": "A", "B@Example.Com": "B"}
            assert winner["assignee_id"] is not None
            assert "assigned to" in loser["error"]["message"]
            assert any(n in loser["error"]["message"] for n in ("A", "B")), names
    finally:
        server.shutdown()


def _task_factory(api, department, tariff, client):
    def make():
        order = api.order(client["id"], tariff["id"])
        _, paid = api.pay(order)
        op = api.wait_operation(paid["operation_id"], ("manual",))
        return api.ok("get", f"/tasks?operation_id={op['id']}")["tasks"][0]["id"]

    return make


def test_assign_race_exactly_one_wins(app, api):
    department, module, tariff, client = api.catalog(
        "sandbox", {"fail_first": 9, "permanent_failures": True}
    )
    tokens = [_staff(app, f"{who}@example.com", [department["id"]]) for who in "ab"]
    _race(app, 8, tokens, _task_factory(api, department, tariff, client))


@pytest.mark.postgres
def test_assign_race_on_postgres(app, postgres_url, worker):
    """The same race on PostgreSQL, where the two requests really run at once."""
    from actors.middleware import AppContextMiddleware
    from app import create_app, schema

    pg = create_app({**app.config, "DATABASE_URL": postgres_url})
    schema.upgrade()
    AppContextMiddleware.app = pg
    try:
        with pg.app_context(), database.connection_context():
            accounts.create_user(
                {"email": "admin@example.com", "name": "Admin", "password": "admin-password"},
                role="admin",
            )
            admin = Api(pg.test_client(), accounts.create_token("admin@example.com"))
        department, module, tariff, client = admin.catalog(
            "sandbox", {"fail_first": 9, "permanent_failures": True}
        )
        tokens = [_staff(pg, f"{who}@example.com", [department["id"]]) for who in "ab"]
        _race(pg, 8, tokens, _task_factory(admin, department, tariff, client))
    finally:
        if not database.is_closed():
            database.close()
        AppContextMiddleware.app = app


def test_manual_module_round_trip(api):
    """Every operation of the manual setup module is a task; closing it completes the
    operation and moves the service to the status that operation leads to."""
    department = api.ok("post", "/departments", {"name": "Hands"})
    module = api.ok(
        "post",
        "/modules",
        {"name": "By hand", "type": "manual", "config": {}, "department_id": department["id"]},
    )
    tariff = api.ok(
        "post",
        "/tariffs",
        {
            "name": "Custom",
            "product_type": "custom",
            "price": "10",
            "internal_name": "custom-1",
            "module_ids": [module["id"]],
        },
    )
    other = api.ok(
        "post",
        "/tariffs",
        {
            "name": "Custom+",
            "product_type": "custom",
            "price": "20",
            "internal_name": "custom-2",
            "module_ids": [module["id"]],
        },
    )
    assert tariff["items"] == [] and tariff["orderable"] is True  # no item needed
    assert api.ok("get", "/operations?kind=ensure_item")["operations"] == []
    client = api.ok("post", "/clients", {"name": "Fay", "email": "fay@example.com"})
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    sid = order["service_id"]

    def through_task(op_id, fields, expected_status):
        op = api.wait_operation(op_id, ("waiting_task",))
        tasks = api.ok("get", f"/tasks?department_id={department['id']}&status=new")["tasks"]
        task = next(t for t in tasks if t["operation_id"] == op["id"])
        api.ok("post", f"/tasks/{task['id']}/close", {"fields": fields})
        assert api.ok("get", f"/operations/{op['id']}")["status"] == "done"
        assert api.ok("get", f"/services/{sid}")["status"] == expected_status
        return task

    task = through_task(paid["operation_id"], {"details": "rack 4, unit 12"}, "active")
    assert task["title"] == f"Set up service #{sid} manually"
    assert api.ok("get", f"/services/{sid}")["details"] == {"details": "rack 4, unit 12"}
    for kind, body, expected in (
        ("suspend", None, "suspended"),
        ("resume", None, "active"),
        ("change_tariff", {"tariff_id": other["id"]}, "active"),
        ("close", None, "deleted"),
    ):
        op = api.ok("post", f"/services/{sid}/{kind}", body, status=202)
        through_task(op["id"], {}, expected)
    assert api.ok("get", f"/services/{sid}")["tariff_id"] == other["id"]


def test_take_over_cancel_reopen_and_run_now(api):
    _, module, tariff, client = api.catalog("sandbox", {"fail_first": 1}, retry_delay=120)
    order = api.order(client["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"], ("retry_wait",))
    # "Set up manually" from Current operations: a task, and no more automatic retries
    task = api.ok("post", f"/operations/{op['id']}/take-over")
    # whoever clicked it has it (issue 12)
    assert task["operation_id"] == op["id"] and task["status"] == "in_work"
    assert task["assignee_id"] is not None
    assert api.ok("get", f"/operations/{op['id']}")["status"] == "manual"
    again = api.ok("post", f"/operations/{op['id']}/take-over")
    assert again["id"] == task["id"]  # the same task, not a second one
    # cancelling the task cancels the operation; an admin reopens both
    api.ok("post", f"/tasks/{task['id']}/cancel", {"reason": "client changed their mind"})
    assert api.ok("get", f"/operations/{op['id']}")["status"] == "cancelled"
    reopened = api.ok("post", f"/tasks/{task['id']}/reopen")
    assert reopened["status"] == "in_work"  # still its assignee's
    assert api.ok("get", f"/operations/{op['id']}")["status"] == "manual"
    # run now from the task: the attempt succeeds and the task closes itself with a note
    api.ok("post", f"/operations/{op['id']}/restart", status=202)
    api.wait_operation(op["id"])
    closed = api.ok("get", f"/tasks/{task['id']}")
    assert closed["status"] == "closed"
    kinds = [e["kind"] for e in closed["events"]]
    assert kinds[0] == "created" and "cancelled" in kinds and "reopened" in kinds
    assert "completed automatically" in closed["events"][-1]["text"]
    assert api.ok("get", f"/services/{order['service_id']}")["status"] == "active"


def test_notifications_by_email(app, api, smtp_server):
    app.config["SMTP_URL"] = smtp_server.url
    department = api.ok("post", "/departments", {"name": "NOC", "notify_email": "noc@example.com"})
    module = api.ok(
        "post",
        "/modules",
        {"name": "Hands", "type": "manual", "config": {}, "department_id": department["id"]},
    )
    tariff = api.ok(
        "post",
        "/tariffs",
        {
            "name": "Rack",
            "product_type": "dedicated",
            "price": "99",
            "internal_name": "rack",
            "module_ids": [module["id"]],
        },
    )
    client = api.ok("post", "/clients", {"name": "Gus", "email": "gus@example.com"})
    order = api.order(client["id"], tariff["id"])
    api.pay(order)
    note = wait_for(
        lambda: [m for m in smtp_server.messages if m["to"] == ["noc@example.com"]],
        message="the department's notification",
    )[0]
    assert f"Set up service #{order['service_id']} manually" in note["subject"]
    staff = api.ok(
        "post",
        "/staff",
        {
            "email": "hal@example.com",
            "name": "Hal",
            "password": "hal-password",
            "department_ids": [department["id"]],
        },
        status=201,
    )
    task = api.ok("get", f"/tasks?department_id={department['id']}")["tasks"][0]
    api.ok("post", f"/tasks/{task['id']}/assign", {"user_id": staff["id"]})
    handed = wait_for(
        lambda: [m for m in smtp_server.messages if m["to"] == ["hal@example.com"]],
        message="the assignee's notification",
    )[0]
    assert f"#{task['id']}" in handed["subject"] and "Admin" in handed["body"]


def test_staff_and_department_updates(api):
    a = api.ok("post", "/departments", {"name": "A"})
    b = api.ok("post", "/departments", {"name": "B"})
    staff = api.ok(
        "post",
        "/staff",
        {
            "email": "ida@example.com",
            "name": "Ida",
            "password": "ida-password",
            "department_ids": [a["id"]],
        },
        status=201,
    )
    changed = api.ok("put", f"/staff/{staff['id']}", {"department_ids": [b["id"]], "role": "admin"})
    assert changed["department_ids"] == [b["id"]] and changed["role"] == "admin"
    code, body = api.put(f"/staff/{staff['id']}", {"department_ids": [999]})
    assert code == 422 and "department_ids" in body["error"]["fields"]
    assert api.ok("get", f"/staff/{staff['id']}")["department_ids"] == [b["id"]]
    renamed = api.ok(
        "put", f"/departments/{a['id']}", {"name": "Alpha", "notify_email": "alpha@example.com"}
    )
    assert renamed == {"id": a["id"], "name": "Alpha", "notify_email": "alpha@example.com"}
    code, body = api.put(f"/departments/{a['id']}", {"name": "B"})
    assert code == 422 and "name" in body["error"]["fields"]
