"""The UI of issue #3 through Flask's test client: staff management, department edit, the
tasks page and everything done with a task, "Set up manually", the manual setup module."""

import re

import pytest

from app.models import Email, Operation, Service, StaffMembership, Task, TaskEvent, User
from tests.support import (
    ADMIN,
    HTMX,
    db,
    html,
    login,
    make_client_login,
    make_staff,
    paid_service,
    wait_for,
)

ESCALATES = {"fail_first": 1, "permanent_failures": True}  # the first attempt gives up


def escalated(api, **module_fields):
    """A paid service whose open operation escalated at once: ids and the task's id."""
    ids = paid_service(api, config=ESCALATES, wait=("manual",), module_fields=module_fields)
    with db(api.client.application):
        ids["task_id"] = Task.get(Task.operation == ids["operation_id"]).id
    return ids


def manual_service(api):
    """A paid service on the manual setup module: its open operation waits for a task."""
    department, module, tariff, customer = api.catalog("manual")
    order = api.order(customer["id"], tariff["id"])
    status, body = api.pay(order)
    assert status == 200, body
    api.wait_operation(body["operation_id"], ("waiting_task",))
    with db(api.client.application):
        task_id = Task.get(Task.operation == body["operation_id"]).id
    return {
        "department": department,
        "module": module,
        "tariff": tariff,
        "service_id": order["service_id"],
        "operation_id": body["operation_id"],
        "task_id": task_id,
    }


def switch_to(client, email, password="staff-password"):
    client.post("/logout")
    login(client, email, password)


def flash_of(response):
    return re.findall(r'class="alert alert-\w+" role="\w+">([^<]*)<', html(response))


VPS_FIELDS = {
    "field.hostname": "vps9.example.net",
    "field.ip": "203.0.113.9",
    "field.username": "root",
    "field.password": "pw-999999",
}


# --- staff management -------------------------------------------------------------------


def test_staff_list_new_member_and_their_login(app, client, admin):
    support = admin.ok("post", "/departments", {"name": "Support"})
    billing = admin.ok("post", "/departments", {"name": "Billing"})
    listing = html(client.get("/staff"))
    assert "New staff member" in listing and ADMIN[0] in listing and "(you)" in listing
    form = html(client.get("/staff/new"))
    assert 'name="department_ids"' in form and "Support" in form and "Billing" in form
    assert 'name="csrf_token"' in form
    # errors by the field, nothing created
    response = client.post(
        "/staff/new",
        data={"email": "not-an-email", "name": "Sam", "password": "short", "role": "staff"},
    )
    assert response.status_code == 422
    body = html(response)
    assert 'id="err-email"' in body and "Must be an email address." in body
    assert 'id="err-password"' in body and "At least 8 characters." in body
    assert 'value="Sam"' in body and "short" not in body  # the password is never echoed
    with db(app):
        assert User.select().count() == 1
    response = client.post(
        "/staff/new",
        data={
            "email": "Sam@Example.com",
            "name": "Sam Support",
            "password": "sam-password",
            "role": "staff",
            "department_ids": [str(support["id"]), str(billing["id"])],
        },
    )
    assert response.status_code == 302 and response.headers["Location"] == "/staff"
    listing = html(client.get("/staff"))
    with db(app):
        sam = User.get(User.email == "sam@example.com")
        assert sam.role == "staff"
        assert {
            m.department_id for m in StaffMembership.select().where(StaffMembership.user == sam)
        } == {
            support["id"],
            billing["id"],
        }
    row = re.search(rf'<tr id="staff-{sam.id}".*?</tr>', listing, re.S).group(0)
    assert "Sam Support" in row and '<span class="tag">Support</span>' in row
    assert '<span class="tag">Billing</span>' in row and "sam@example.com" in row
    # the same email twice
    response = client.post(
        "/staff/new",
        data={"email": "sam@example.com", "password": "sam-password", "role": "staff"},
    )
    assert response.status_code == 422 and "An account with this email exists." in html(response)
    # Sam logs in and works on tasks, but the catalog and staff pages are not his
    switch_to(client, "sam@example.com", "sam-password")
    assert client.get("/tasks").status_code == 200
    assert client.get("/staff").status_code == 403
    assert "Staff</a>" not in html(client.get("/tasks"))  # no nav link either


def test_staff_edit_departments_role_active_and_password(app, client, admin):
    support = admin.ok("post", "/departments", {"name": "Support"})
    billing = admin.ok("post", "/departments", {"name": "Billing"})
    sam_id = make_staff(app, "sam@example.com", [support["id"]])
    form = html(client.get(f"/staff/{sam_id}/edit"))
    assert "sam@example.com" in form and 'value="Sam"' in form
    assert re.search(rf'value="{support["id"]}" checked', form)
    assert not re.search(rf'value="{billing["id"]}" checked', form)
    assert re.search(r'name="is_active"[^>]*checked', form)
    # blank name: an error by the field, nothing saved
    response = client.post(f"/staff/{sam_id}/edit", data={"name": "", "role": "staff"})
    assert response.status_code == 422 and 'id="err-name"' in html(response)
    # move Sam to Billing, keep the password (blank), lock him out
    response = client.post(
        f"/staff/{sam_id}/edit",
        data={"name": "Samuel", "role": "staff", "department_ids": [str(billing["id"])]},
    )
    assert response.status_code == 302
    with db(app):
        sam = User.get_by_id(sam_id)
        assert sam.name == "Samuel" and sam.is_active is False
        assert [m.department_id for m in sam.memberships] == [billing["id"]]
    client.post("/logout")
    response = client.post(
        "/login", data={"email": "sam@example.com", "password": "staff-password"}
    )
    assert response.status_code == 422  # inactive: no login
    login(client, *ADMIN)
    # active again, with a new password
    response = client.post(
        f"/staff/{sam_id}/edit",
        data={
            "name": "Samuel",
            "role": "staff",
            "department_ids": [str(billing["id"])],
            "is_active": "1",
            "password": "new-password-1",
        },
    )
    assert response.status_code == 302
    switch_to(client, "sam@example.com", "new-password-1")
    assert client.get("/tasks").status_code == 200
    switch_to(client, *ADMIN)
    # an admin cannot demote themselves
    with db(app):
        me = User.get(User.email == ADMIN[0])
    response = client.post(
        f"/staff/{me.id}/edit", data={"name": "Admin", "role": "staff", "is_active": "1"}
    )
    assert response.status_code == 422
    assert "You cannot demote or lock yourself out." in html(response)
    with db(app):
        assert User.get_by_id(me.id).role == "admin"
    # a client login is not a staff member
    carol = make_client_login(app)
    with db(app):
        carol_user = User.get(User.client == carol)
    assert client.get(f"/staff/{carol_user.id}/edit").status_code == 404
    assert client.get("/staff/999999/edit").status_code == 404


def test_department_edit_and_its_notification_email(app, client, admin):
    ids = escalated(admin)
    department_id = ids["department"]["id"]
    listing = html(client.get("/catalog/departments"))
    assert f"/catalog/departments/{department_id}/edit" in listing
    form = html(client.get(f"/catalog/departments/{department_id}/edit"))
    assert "email on each new task" in form
    admin.ok("post", "/departments", {"name": "Billing"})
    response = client.post(
        f"/catalog/departments/{department_id}/edit",
        data={"name": "Billing", "notify_email": "nope"},
    )
    assert response.status_code == 422
    body = html(response)
    assert "A department with this name exists." in body and "Must be an email address." in body
    response = client.post(
        f"/catalog/departments/{department_id}/edit",
        data={"name": "Provisioning", "notify_email": "desk@example.com"},
    )
    assert response.status_code == 302 and response.headers["Location"] == "/catalog/departments"
    make_staff(app, "sam@example.com", [department_id])
    row = re.search(
        rf'<tr id="department-{department_id}".*?</tr>',
        html(client.get("/catalog/departments")),
        re.S,
    ).group(0)
    assert "Provisioning" in row and "desk@example.com" in row and "Sam" in row
    assert client.get("/catalog/departments/999999/edit").status_code == 404
    # the next task of the department is announced to its notify email
    order = admin.order(ids["client"]["id"], ids["tariff"]["id"])
    admin.pay(order)
    with db(app):
        wait_for(
            lambda: Email.select().where(Email.to == "desk@example.com").exists(),
            message="the new-task email",
        )


# --- the tasks page ---------------------------------------------------------------------


def test_tasks_filters_department_status_mine_and_kind(app, client, admin):
    first = escalated(admin)
    manual = manual_service(admin)
    # close the manual open task, then suspend: a second task, of kind suspend
    response = client.post(f"/tasks/{manual['task_id']}/close", data=VPS_FIELDS)
    assert response.status_code == 302
    response = client.post(f"/services/{manual['service_id']}/suspend")
    assert response.status_code == 302
    with db(app):
        suspend_task = wait_for(
            lambda: (
                Task.select()
                .where((Task.service == manual["service_id"]) & (Task.status == "new"))
                .first()
            )
        )

    def rows(query=""):
        body = html(client.get(f"/tasks{query}", headers={**HTMX, "HX-Target": "tasks-live"}))
        assert "<html" not in body
        return set(map(int, re.findall(r'<tr id="task-(\d+)"', body)))

    assert rows() == {first["task_id"], suspend_task.id}
    assert rows("?status=closed") == {manual["task_id"]}
    assert rows("?status=all") == {first["task_id"], suspend_task.id, manual["task_id"]}
    assert rows("?kind=suspend") == {suspend_task.id}
    assert rows("?kind=open&status=all") == {first["task_id"], manual["task_id"]}
    assert rows(f"?department={first['department']['id']}") == {first["task_id"]}
    assert rows("?mine=1") == set()
    client.post(f"/tasks/{first['task_id']}/assign")
    assert rows("?mine=1") == {first["task_id"]}
    assert rows("?kind=bogus&status=bogus&department=x") == {first["task_id"], suspend_task.id}
    # the page keeps the filters in its form and polls with them
    page = html(client.get("/tasks?kind=suspend"))
    assert re.search(r'<option value="suspend" selected>', page)
    assert 'hx-include="#task-filters, #tasks-page"' in page and 'hx-trigger="every 2s"' in page
    # staff see their departments only, and a department filter cannot widen that
    make_staff(app, "sam@example.com", [manual["department"]["id"]])
    switch_to(client, "sam@example.com")
    assert rows() == {suspend_task.id}
    assert rows(f"?department={first['department']['id']}") == set()
    page = html(client.get("/tasks"))
    assert first["department"]["name"] not in page
    # staff in no department are told why they see nothing
    make_staff(app, "nobody@example.com")
    switch_to(client, "nobody@example.com")
    assert "You are not in any department yet" in html(client.get("/tasks"))


# --- one task ---------------------------------------------------------------------------


def test_task_page_shows_service_client_tariff_operation_and_errors(app, client, admin):
    ids = escalated(admin)
    body = html(client.get(f"/tasks/{ids['task_id']}"))
    assert f"/services/{ids['service_id']}" in body
    assert ids["client"]["name"] in body and ids["client"]["email"] in body
    assert "VPS S" in body and ids["tariff"]["internal_name"] in body
    assert f"/operations/{ids['operation_id']}" in body and "1 / 3" in body
    assert 'id="last-error"' in body and 'id="failed-attempts"' in body
    assert "sandbox: simulated failure of attempt 1" in body
    # the form of the product type's detail fields; required ones marked
    assert re.search(r'for="f-field-hostname">Hostname <span class="req"', body)
    assert re.search(r'for="f-field-panel_url">Control panel URL</label>', body)
    assert "Add comment" in body and "Cancel task" in body and "History" in body
    assert "Reopen" not in body  # open tasks are not reopened
    # not polling: no attempt under way
    assert 'id="task-operation"' in body
    assert not re.search(r'id="task-operation"[^>]*hx-trigger', body)


def test_comment_by_the_field_then_in_comments_and_history(app, client, admin):
    ids = escalated(admin)
    task_id = ids["task_id"]
    with db(app):
        events = TaskEvent.select().where(TaskEvent.task == task_id).count()
    response = client.post(f"/tasks/{task_id}/comment", data={"text": "   "})
    assert response.status_code == 422
    body = html(response)
    assert 'id="err-text"' in body and "Write a comment." in body
    assert 'id="err-field-hostname"' not in body  # the other forms show no errors
    assert "Please correct the marked fields." not in body
    with db(app):
        assert TaskEvent.select().where(TaskEvent.task == task_id).count() == events
    response = client.post(f"/tasks/{task_id}/comment", data={"text": "Called the DC.\nWaiting."})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/tasks/{task_id}#comments"
    body = html(client.get(f"/tasks/{task_id}"))
    comments = re.search(r'<section class="card" id="comments">.*?</section>', body, re.S).group(0)
    assert "Called the DC.\nWaiting." in comments and ADMIN[0] in comments
    history = re.search(r'<section class="card" id="history">.*?</section>', body, re.S).group(0)
    assert 'data-kind="comment"' in history and 'data-kind="created"' in history


def test_close_errors_by_field_keep_values(app, client, admin):
    ids = escalated(admin)
    response = client.post(
        f"/tasks/{ids['task_id']}/close",
        data={**VPS_FIELDS, "field.ip": "", "comment": "almost"},
    )
    assert response.status_code == 422
    body = html(response)
    assert 'id="err-field-ip"' in body and "IP address is required." in body
    assert 'value="vps9.example.net"' in body and "almost</textarea>" in body
    assert "Please correct the marked fields." in body
    with db(app):
        assert Task.get_by_id(ids["task_id"]).status == "new"
        assert Service.get_by_id(ids["service_id"]).status == "processing"


def test_cancel_with_reason_then_reopen_by_an_admin_only(app, client, admin):
    ids = escalated(admin)
    task_id = ids["task_id"]
    make_staff(app, "sam@example.com", [ids["department"]["id"]])
    switch_to(client, "sam@example.com")
    response = client.post(f"/tasks/{task_id}/cancel", data={"reason": "Client withdrew."})
    assert response.status_code == 302
    with db(app):
        assert Task.get_by_id(task_id).status == "cancelled"
        assert Operation.get_by_id(ids["operation_id"]).status == "cancelled"
    body = html(client.get(f"/tasks/{task_id}"))
    assert "Client withdrew." in body and "Close the task" not in body
    assert "Reopen" not in body  # staff do not reopen
    response = client.post(f"/tasks/{task_id}/reopen")
    assert response.status_code == 403
    with db(app):
        assert Task.get_by_id(task_id).status == "cancelled"
    response = client.post(f"/tasks/{task_id}/cancel", follow_redirects=True)
    assert "already cancelled" in html(response)
    switch_to(client, *ADMIN)
    assert "Reopen" in html(client.get(f"/tasks/{task_id}"))
    response = client.post(f"/tasks/{task_id}/reopen", follow_redirects=True)
    assert f"Task #{task_id} reopened." in html(response)
    with db(app):
        assert Task.get_by_id(task_id).status == "new"
        assert Operation.get_by_id(ids["operation_id"]).status == "manual"
    response = client.post(f"/tasks/{task_id}/reopen", follow_redirects=True)
    assert "not closed" in html(response)
    # a cancel without a reason says so in the history
    client.post(f"/tasks/{task_id}/cancel", data={"reason": ""})
    with db(app):
        last = (
            TaskEvent.select().where(TaskEvent.task == task_id).order_by(TaskEvent.id.desc()).get()
        )
        assert (last.kind, last.text) == ("cancelled", "Cancelled.")


def test_run_again_polls_and_the_page_reloads_when_the_task_closes(
    app, client, admin, sandbox_hold
):
    ids = escalated(admin, retry_delay=1)
    task_id = ids["task_id"]
    sandbox_hold.hold()  # the attempt is seen under way: it stays at the panel until released
    response = client.post(f"/tasks/{task_id}/restart", follow_redirects=True)
    body = html(response)
    assert f"Operation #{ids['operation_id']} queued to run now." in body
    assert re.search(r'id="task-operation"[^>]*hx-get="/tasks/\d+\?was=new"', body, re.S)
    partial = client.get(
        f"/tasks/{task_id}?was=new", headers={**HTMX, "HX-Target": "task-operation"}
    )
    assert "<html" not in html(partial) and 'id="task-operation"' in html(partial)
    sandbox_hold.release()
    # attempt 2 succeeds (fail_first=1): the operation is done, the task closed itself
    admin.wait_operation(ids["operation_id"])
    with db(app):
        task = Task.get_by_id(task_id)
        assert task.status == "closed" and task.closed_by == "system"
    refresh = client.get(
        f"/tasks/{task_id}?was=new", headers={**HTMX, "HX-Target": "task-operation"}
    )
    assert refresh.headers.get("HX-Refresh") == "true"
    body = html(client.get(f"/tasks/{task_id}"))
    assert "the task closed itself" in body and "hx-trigger" not in body
    assert "completed automatically" in body  # the note in the history


def test_another_departments_task_is_403_for_every_action(app, client, admin):
    ids = escalated(admin)
    task_id = ids["task_id"]
    make_staff(app, "eve@example.com", [admin.ok("post", "/departments", {"name": "Other"})["id"]])
    switch_to(client, "eve@example.com")
    with db(app):
        before = (Task.get_by_id(task_id).status, TaskEvent.select().count())
    for method, path, data in [
        ("get", f"/tasks/{task_id}", None),
        ("post", f"/tasks/{task_id}/assign", {}),
        ("post", f"/tasks/{task_id}/close", VPS_FIELDS),
        ("post", f"/tasks/{task_id}/comment", {"text": "hi"}),
        ("post", f"/tasks/{task_id}/cancel", {"reason": "no"}),
        ("post", f"/tasks/{task_id}/reopen", {}),
        ("post", f"/tasks/{task_id}/restart", {}),
    ]:
        response = getattr(client, method)(path, data=data)
        assert response.status_code == 403, (path, response.status_code)
        body = html(response)
        assert "Not allowed" in body and "a department you are not in" in body
        assert ids["client"]["email"] not in body  # nothing of the task leaks
    with db(app):
        assert (Task.get_by_id(task_id).status, TaskEvent.select().count()) == before
        assert Operation.get_by_id(ids["operation_id"]).status == "manual"
    assert client.get("/tasks/999999").status_code == 404


# --- set up manually --------------------------------------------------------------------


def test_set_up_manually_from_current_operations(app, client, admin):
    ids = paid_service(
        admin, config={"fail_first": 5}, module_fields={"retry_delay": 300}, wait=("retry_wait",)
    )
    op_id = ids["operation_id"]
    body = html(client.get("/operations", headers={**HTMX, "HX-Target": "operations-live"}))
    row = re.search(rf'<tr id="operation-{op_id}".*?</tr>', body, re.S).group(0)
    assert f'action="/operations/{op_id}/take-over"' in row and "Set up manually" in row
    assert f'action="/operations/{op_id}/take-over"' in html(client.get(f"/operations/{op_id}"))
    with db(app):
        assert not Task.select().where(Task.operation == op_id).exists()
    response = client.post(f"/operations/{op_id}/take-over", data={"next": "/operations"})
    assert response.status_code == 302
    with db(app):
        task = Task.get(Task.operation == op_id)
        assert Operation.get_by_id(op_id).status == "manual"
        assert task.department_id == ids["department"]["id"]
    assert response.headers["Location"] == f"/tasks/{task.id}"
    assert "taken over by admin@example.com" in html(client.get(f"/tasks/{task.id}"))
    # again: the same task, no second one
    response = client.post(f"/operations/{op_id}/take-over")
    assert response.headers["Location"] == f"/tasks/{task.id}"
    with db(app):
        assert Task.select().where(Task.operation == op_id).count() == 1
    # staff of another department: no button, and the action is refused (its department's)
    make_staff(app, "eve@example.com")
    switch_to(client, "eve@example.com")
    assert "take-over" not in html(client.get(f"/operations/{op_id}"))
    response = client.post(f"/operations/{op_id}/take-over", data={"next": "/operations"})
    assert response.status_code == 403
    switch_to(client, *ADMIN)
    # a finished operation has nothing to take over
    done = paid_service(admin)
    response = client.post(f"/operations/{done['operation_id']}/take-over", follow_redirects=True)
    assert "there is nothing to take over" in html(response)
    assert client.post("/operations/999999/take-over").status_code == 404


def test_service_actions_show_in_current_operations(app, client, admin, sandbox_hold):
    ids = paid_service(admin)
    sandbox_hold.hold()  # the suspend stays open (at the panel) until released
    response = client.post(f"/services/{ids['service_id']}/suspend")
    assert response.status_code == 302
    with db(app):
        op = Operation.get((Operation.service == ids["service_id"]) & (Operation.kind == "suspend"))
    body = html(client.get("/operations"))
    row = re.search(rf'<tr id="operation-{op.id}".*?</tr>', body, re.S).group(0)
    assert "Suspend" in row and f"by {ADMIN[0]}" in row
    service_page = html(client.get(f"/services/{ids['service_id']}"))
    assert "Why this module" in service_page and "chosen" in service_page
    sandbox_hold.release()
    admin.wait_operation(op.id)


# --- the manual setup module ------------------------------------------------------------


def test_manual_module_is_selectable_and_has_no_settings(app, client, admin):
    department = admin.ok("post", "/departments", {"name": "Hands"})
    assert "Manual setup" in html(client.get("/catalog/modules/new"))
    fieldset = html(client.get("/catalog/modules/config-fields?type=manual"))
    assert "This module type has no settings." in fieldset
    response = client.post(
        "/catalog/modules/new",
        data={
            "name": "By hand",
            "type": "manual",
            "department_id": department["id"],
            "enabled": "1",
        },
    )
    assert response.status_code == 302, html(response)
    listing = html(client.get("/catalog/modules"))
    assert "By hand" in listing and "Manual setup" in listing


def test_manual_module_tasks_for_open_then_suspend(app, client, admin):
    ids = manual_service(admin)
    body = html(client.get(f"/tasks/{ids['task_id']}"))
    assert "waiting task" in body and 'name="field.hostname"' in body
    assert "Run the operation again now" not in body  # nothing to run: people do it
    response = client.post(f"/tasks/{ids['task_id']}/close", data={**VPS_FIELDS, "field.ip": ""})
    assert response.status_code == 422 and "IP address is required." in html(response)
    response = client.post(f"/tasks/{ids['task_id']}/close", data=VPS_FIELDS)
    assert response.status_code == 302
    with db(app):
        service = Service.get_by_id(ids["service_id"])
        assert service.status == "active" and service.details["ip"] == "203.0.113.9"
    assert "Why this module" in html(client.get(f"/services/{ids['service_id']}"))
    # suspend: a task with no detail fields; closing it suspends the service
    client.post(f"/services/{ids['service_id']}/suspend")
    with db(app):
        task = wait_for(
            lambda: (
                Task.select()
                .where((Task.service == ids["service_id"]) & (Task.status == "new"))
                .first()
            )
        )
    body = html(client.get(f"/tasks/{task.id}"))
    assert "Suspend service" in body and "Do the suspend by hand" in body
    assert 'name="field.' not in body
    response = client.post(f"/tasks/{task.id}/close", data={"comment": "Suspended on the panel."})
    assert response.status_code == 302
    with db(app):
        assert Service.get_by_id(ids["service_id"]).status == "suspended"


@pytest.mark.parametrize("path", ["/staff", "/staff/new", "/catalog/departments/1/edit"])
def test_admin_pages_are_refused_to_staff(app, client, path):
    make_staff(app, "sam@example.com")
    login(client, "sam@example.com", "staff-password")
    assert client.get(path).status_code == 403


def test_assign_says_who_was_quicker_and_an_admin_may_take_over(app, client, admin):
    ids = escalated(admin)
    task_id = ids["task_id"]
    make_staff(app, "sam@example.com", [ids["department"]["id"]])
    make_staff(app, "bob@example.com", [ids["department"]["id"]])
    switch_to(client, "sam@example.com")
    assert "Assign to me" in html(client.get(f"/tasks/{task_id}"))
    response = client.post(f"/tasks/{task_id}/assign", follow_redirects=True)
    assert "The task is yours." in html(response) and "assigned to you" in html(response)
    switch_to(client, "bob@example.com")
    body = html(client.get(f"/tasks/{task_id}"))
    assert "Assign to me" not in body and "assigned to Sam" in body
    assert "Take it over" not in body  # only admins hand a task over
    # Bob's page was older: his click comes second and he is told who was quicker
    response = client.post(f"/tasks/{task_id}/assign", follow_redirects=True)
    assert f"task {task_id} is already assigned to Sam" in flash_of(response)
    response = client.post(f"/tasks/{task_id}/assign", data={"force": "1"}, follow_redirects=True)
    assert "already assigned to Sam" in " ".join(flash_of(response))
    switch_to(client, *ADMIN)
    body = html(client.get(f"/tasks/{task_id}"))
    assert "Take it over from Sam" in body and 'name="force" value="1"' in body
    response = client.post(f"/tasks/{task_id}/assign", data={"force": "1"}, follow_redirects=True)
    assert "The task is yours." in html(response)
    with db(app):
        task = Task.get_by_id(task_id)
        assert task.assignee.email == ADMIN[0] and task.status == "in_work"


def test_a_task_received_through_the_proxy_shows_its_description_and_form(app, client, admin):
    from app.services import proxy

    department = admin.ok("post", "/departments", {"name": "Data centre"})
    with db(app):
        side = proxy.create_server_side(
            {"login": "provider-a", "password": "peer-password", "department_id": department["id"]}
        )
        task, _ = proxy.receive_task(
            side,
            {
                "sender_task_id": 77,
                "department_id": department["id"],
                "title": "Rack server for client X",
                "description": "Rack it in row 4.\nCable: 2x10G.",
                "form": [
                    {"name": "ip", "label": "IP address", "required": True},
                    {"name": "rack", "label": "Rack"},
                ],
            },
        )
    body = html(client.get(f"/tasks/{task.id}"))
    assert "provider-a" in body and "their task #77" in body
    assert "Rack it in row 4.\nCable: 2x10G." in body
    assert re.search(r'for="f-field-ip">IP address <span class="req"', body)
    assert 'name="field.rack"' in body
    response = client.post(f"/tasks/{task.id}/close", data={"field.ip": "", "field.rack": "R4"})
    assert response.status_code == 422 and "IP address is required." in html(response)
    response = client.post(f"/tasks/{task.id}/close", data={"field.ip": "10.0.0.9"})
    assert response.status_code == 302
    with db(app):
        closed = Task.get_by_id(task.id)
        assert closed.status == "closed" and closed.fields == {"ip": "10.0.0.9"}
