"""Tasks for teams (issue 12): assigning a task to a member of its department, priority
and due date (overdue shown, sorted by due), text search over title and body, "My tasks"
— on the pages (Flask's test client) and through the staff API."""

import datetime as dt
import re

import pytest

from app.models import Department, Operation, ProxyInbound, ProxyServerSide, Task, TaskEvent, utcnow
from tests.support import HTMX, Api, db, html, login, make_staff


def row_ids(page):
    return [int(n) for n in re.findall(r'<tr id="task-(\d+)"', page)]


@pytest.fixture
def team(app, admin):
    """Two departments; Sam and Tess in Support, Olga in Other; tasks of Support: a
    suspend (with a comment), a peer's task (with a description); one of Other."""
    support = admin.ok("post", "/departments", {"name": "Support"})
    other = admin.ok("post", "/departments", {"name": "Other"})
    ids = {
        "support": support["id"],
        "other": other["id"],
        "sam": make_staff(app, "sam@example.com", [support["id"]]),
        "tess": make_staff(app, "tess@example.com", [support["id"]]),
        "olga": make_staff(app, "olga@example.com", [other["id"]]),
    }
    with db(app):
        op = Operation.create(kind="suspend", status="manual")
        ids["suspend"] = Task.create(department=support["id"], operation=op).id
        TaskEvent.create(task=ids["suspend"], kind="comment", stored_text="the router is flaky")
        peer = Task.create(department=support["id"], stored_title="Rack the new switch")
        side = ProxyServerSide.create(
            login="peer", password_hash="x", department=Department.get_by_id(other["id"])
        )
        ProxyInbound.create(
            server_side=side, sender_task_id=7, task=peer, description="bring a ladder"
        )
        ids["peer"] = peer.id
        ids["elsewhere"] = Task.create(department=other["id"], stored_title="Rack it too").id
    return ids


def as_user(client, email):
    client.post("/logout")
    login(client, email, "staff-password")


def test_assign_a_task_to_a_colleague_of_its_department(app, client, team):
    as_user(client, "sam@example.com")
    page = html(client.get(f"/tasks/{team['suspend']}"))
    form = page[page.index('id="assign-form"') :]
    form = form[: form.index("</form>")]
    # the department's members (and the admin), never another department's staff
    assert "Tess" in form and "Sam" in form and "Admin" in form and "Olga" not in form
    response = client.post(f"/tasks/{team['suspend']}/assign", data={"user_id": team["tess"]})
    assert response.status_code == 302
    assert "assigned to Tess" in html(client.get(response.headers["Location"]))
    with db(app):
        task = Task.get_by_id(team["suspend"])
        assert task.assignee_id == team["tess"] and task.status == "in_work"
        events = [e.text for e in TaskEvent.select().where(TaskEvent.task == task.id)]
        assert "Assigned to Tess." in events
        # Tess is told by email
        from app.models import Email

        assert Email.select().where(Email.to == "tess@example.com").count() == 1

    # someone outside the department: refused by the field, nothing changed
    as_user(client, "tess@example.com")
    response = client.post(
        f"/tasks/{team['suspend']}/assign", data={"user_id": team["olga"], "force": "1"}
    )
    assert response.status_code == 422 and "Choose a member of the task" in html(response)
    response = client.post(f"/tasks/{team['suspend']}/assign", data={"user_id": "999999"})
    assert response.status_code == 422
    # the assignee hands it back to Sam
    client.post(f"/tasks/{team['suspend']}/assign", data={"user_id": team["sam"], "force": "1"})
    with db(app):
        assert Task.get_by_id(team["suspend"]).assignee_id == team["sam"]
    # Tess no longer has it and is no admin: she cannot take it from Sam
    response = client.post(
        f"/tasks/{team['suspend']}/assign", data={"user_id": team["tess"], "force": "1"}
    )
    assert "already assigned to Sam" in html(client.get(response.headers["Location"]))


def test_priority_and_due_date_with_overdue_badge_and_sort_by_due(app, client, team):
    as_user(client, "sam@example.com")
    response = client.post(
        f"/tasks/{team['suspend']}/plan", data={"priority": "urgent", "due_at": "2020-01-01"}
    )
    assert response.status_code == 302
    client.post(f"/tasks/{team['peer']}/plan", data={"priority": "low", "due_at": "2999-12-31"})
    with db(app):
        task = Task.get_by_id(team["suspend"])
        assert task.priority == "urgent" and task.due_at == dt.datetime(2020, 1, 1, 23, 59, 59)
        assert task.is_overdue
        assert "Priority urgent, due 2020-01-01 23:59 UTC." in [e.text for e in task.events]
    page = html(client.get("/tasks"))
    assert f'data-overdue="{team["suspend"]}"' in page
    assert f'data-overdue="{team["peer"]}"' not in page
    assert 'data-priority="urgent"' in page
    by_due = row_ids(html(client.get("/tasks?sort=due&dir=asc")))
    assert by_due == [team["suspend"], team["peer"]]
    by_priority = row_ids(html(client.get("/tasks?sort=priority&dir=desc")))
    assert by_priority == [team["suspend"], team["peer"]]  # urgent before low
    only_urgent = row_ids(html(client.get("/tasks?priority=urgent")))
    assert only_urgent == [team["suspend"]]
    # an empty date clears it; bad input is said by the field, nothing changes
    client.post(f"/tasks/{team['peer']}/plan", data={"priority": "low", "due_at": ""})
    for data in ({"priority": "whenever", "due_at": ""}, {"priority": "high", "due_at": "soon"}):
        response = client.post(f"/tasks/{team['suspend']}/plan", data=data)
        assert response.status_code == 422
        assert 'aria-invalid="true"' in html(response)
    with db(app):
        assert Task.get_by_id(team["peer"]).due_at is None
        assert Task.get_by_id(team["suspend"]).priority == "urgent"
    # a closed task is no longer overdue
    with db(app):
        Task.update(status="cancelled").where(Task.id == team["suspend"]).execute()
        assert not Task.get_by_id(team["suspend"]).is_overdue


def test_search_over_title_and_body_and_my_tasks(app, client, team):
    as_user(client, "sam@example.com")
    assert row_ids(html(client.get("/tasks?q=switch"))) == [team["peer"]]  # stored title
    assert row_ids(html(client.get("/tasks?q=ladder"))) == [team["peer"]]  # description
    assert row_ids(html(client.get("/tasks?q=flaky"))) == [team["suspend"]]  # a comment
    assert row_ids(html(client.get("/tasks?q=Suspend"))) == [team["suspend"]]  # kind title
    assert row_ids(html(client.get(f"/tasks?q=%23{team['peer']}"))) == [team["peer"]]
    # another department's task is never found
    assert row_ids(html(client.get("/tasks?q=Rack"))) == [team["peer"]]
    assert client.get("/tasks", query_string={"q": "x" * 300}).status_code == 422

    client.post(f"/tasks/{team['peer']}/assign")
    mine = html(client.get("/tasks?mine=1"))
    assert row_ids(mine) == [team["peer"]]
    assert 'id="tab-mine" href="/tasks?mine=1" aria-current="page"' in mine
    assert row_ids(html(client.get("/tasks"))) == [team["peer"], team["suspend"]]
    # the live refresh keeps the tab, search and order
    partial = html(
        client.get("/tasks?mine=1&q=switch", headers={**HTMX, "HX-Target": "tasks-live"})
    )
    assert "<html" not in partial and row_ids(partial) == [team["peer"]]
    page = html(client.get("/tasks?mine=1&sort=due&dir=asc"))
    assert '<input type="hidden" name="mine" value="1">' in page
    assert '<input type="hidden" name="sort" value="due">' in page


# --- the staff API ------------------------------------------------------------------------


@pytest.fixture
def sam_api(app, client, team):
    from app.services import accounts

    with db(app):
        token = accounts.create_token("sam@example.com")
    return Api(app.test_client(), token)


def test_api_assign_plan_search_mine_and_sort(app, team, sam_api):
    status, body = sam_api.post(f"/tasks/{team['suspend']}/assign", {"user_id": team["tess"]})
    assert status == 200 and body["assignee_id"] == team["tess"]
    status, body = sam_api.post(f"/tasks/{team['peer']}/assign", {"user_id": team["olga"]})
    assert status == 422 and "user_id" in body["error"]["fields"]

    status, body = sam_api.post(
        f"/tasks/{team['suspend']}/plan", {"priority": "high", "due_at": "2020-01-01T08:30:00Z"}
    )
    assert status == 200, body
    assert body["priority"] == "high" and body["due_at"] == "2020-01-01T08:30:00Z"
    assert body["is_overdue"] is True
    # a key left out stays
    status, body = sam_api.post(f"/tasks/{team['suspend']}/plan", {"priority": "urgent"})
    assert body["due_at"] == "2020-01-01T08:30:00Z" and body["priority"] == "urgent"
    status, body = sam_api.post(f"/tasks/{team['suspend']}/plan", {"due_at": None})
    assert status == 200 and body["due_at"] is None and body["is_overdue"] is False
    for bad in ({"priority": "asap"}, {"due_at": "tomorrow"}, {"due_at": 5}):
        status, body = sam_api.post(f"/tasks/{team['suspend']}/plan", bad)
        assert status == 422 and set(body["error"]["fields"]) == set(bad)
    status, body = sam_api.post(f"/tasks/{team['elsewhere']}/plan", {"priority": "low"})
    assert status == 403

    status, body = sam_api.get("/tasks?q=ladder")
    assert [t["id"] for t in body["tasks"]] == [team["peer"]]
    sam_api.post(f"/tasks/{team['peer']}/assign", {})
    status, body = sam_api.get("/tasks?mine=true")
    assert [t["id"] for t in body["tasks"]] == [team["peer"]]
    status, body = sam_api.get("/tasks?sort=priority&dir=desc")
    assert [t["id"] for t in body["tasks"]] == [team["suspend"], team["peer"]]
    status, body = sam_api.get("/tasks?status=open&priority=urgent")
    assert [t["id"] for t in body["tasks"]] == [team["suspend"]]
    for bad in ("sort=password", "dir=up", "priority=asap", "mine=maybe"):
        status, body = sam_api.get(f"/tasks?{bad}")
        assert status == 422 and bad.split("=")[0] in body["error"]["fields"]


def test_overdue_is_computed_now(app, team):
    with db(app):
        task = Task.get_by_id(team["peer"])
        task.due_at = utcnow() - dt.timedelta(seconds=5)
        assert task.is_overdue
        task.due_at = utcnow() + dt.timedelta(hours=1)
        assert not task.is_overdue
