"""The staff lists (issue 12): sorting by column, page numbers, search, CSV export with
formula-injection protection, rows naming client and tariff, one query per page (no
N+1), and bulk actions in Current operations — through Flask's test client."""

import csv
import datetime as dt
import io
import re
import threading

import pytest

from app.db import database
from app.models import (
    Client,
    Department,
    Email,
    Operation,
    Order,
    ProductType,
    Service,
    Tariff,
    Task,
)
from tests.support import HTMX, db, html, login, make_staff, paid_service

FORMULA_NAME = '=HYPERLINK("http://evil.example","click")'
DAY1 = dt.datetime(2026, 3, 1, 10, 0, 0)
DAY2 = dt.datetime(2026, 3, 2, 11, 0, 0)


def row_ids(page, prefix):
    """The ids of the rows of a list page, top to bottom."""
    return [int(n) for n in re.findall(rf'<tr id="{prefix}-(\d+)"', page)]


def csv_rows(response):
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


@pytest.fixture
def seeded(app):
    """Three clients (one named like a formula), two tariffs, a service and an order each
    (on two days), emails, and open operations; returns their ids by client."""
    with db(app):
        ptype = ProductType.get(ProductType.code == "hosting")
        basic = Tariff.create(name="Basic", product_type=ptype, price="5.00", internal_name="b")
        pro = Tariff.create(name="Pro", product_type=ptype, price="20.00", internal_name="p")
        rows = {}
        for n, (name, email, tariff, domain, when) in enumerate(
            [
                ("Alice Zed", "alice@example.com", basic, "alice-shop.example.org", DAY1),
                ("Bob Young", "bob@example.com", pro, "bobs-blog.example.net", DAY2),
                (FORMULA_NAME, "+evil@example.com", basic, "evil.example", DAY2),
            ]
        ):
            client = Client.create(name=name, email=email, created_at=when)
            service = Service.create(
                client=client,
                tariff=tariff,
                status="active",
                remote_id=f"srv-{n}-remote",
                params={"domain": domain},
                created_at=when,
            )
            order = Order.create(
                client=client,
                tariff=tariff,
                service=service,
                status="unpaid",
                amount=tariff.price,
                created_at=when,
            )
            op = Operation.create(
                kind="suspend",
                service=service,
                status="retry_wait",
                next_run_at=dt.datetime(2099, 1, 1),
                last_error="-1 is not a port, see @admin",
            )
            Email.create(to=email, subject=f"Welcome {name}", body="...", status="outbox")
            rows[email.split("@")[0].lstrip("+")] = {
                "client": client.id,
                "service": service.id,
                "order": order.id,
                "operation": op.id,
            }
    return rows


# --- sorting ------------------------------------------------------------------------------


def test_orders_sort_by_column_both_ways_and_a_bad_key_is_ignored(admin, client, seeded):
    alice, bob, evil = seeded["alice"], seeded["bob"], seeded["evil"]
    default = html(client.get("/orders"))
    assert row_ids(default, "order") == [evil["order"], bob["order"], alice["order"]]

    by_client = client.get("/orders?sort=client&dir=asc")
    assert by_client.status_code == 200
    # "=HYPERLINK" sorts before letters
    assert row_ids(html(by_client), "order") == [evil["order"], alice["order"], bob["order"]]
    assert 'aria-sort="ascending"' in html(by_client)
    # the header links to the other direction, keeping the filters
    page = html(client.get("/orders?sort=amount&dir=desc&status=unpaid"))
    assert row_ids(page, "order")[0] == bob["order"]  # 20.00 first
    link = re.search(r'href="([^"]*)" data-sort="amount"', page).group(1)
    assert "dir=asc" in link and "status=unpaid" in link and "page=" not in link

    for bad in ("password_hash", "client;DROP TABLE order", "x" * 5000):
        response = client.get("/orders", query_string={"sort": bad, "dir": "sideways"})
        assert response.status_code == 200
        assert row_ids(html(response), "order") == row_ids(default, "order")
        assert "Cannot sort by" in html(response)


def test_sorting_is_stable_across_pages(app, admin, client):
    """Equal values (one status for all) keep one order: the pages cover every row once."""
    app.config["PAGE_SIZE"] = 4
    with db(app):
        ids = [Client.create(name="Same Name", email=f"c{n}@example.com").id for n in range(10)]
    seen = []
    for number in (1, 2, 3):
        page = html(client.get(f"/clients?sort=name&dir=asc&page={number}"))
        seen += row_ids(page, "client")
    assert seen == sorted(ids)  # ties broken by id, the same way as the column


def test_services_operations_tasks_outbox_sort_by_their_columns(admin, client, seeded):
    alice, bob = seeded["alice"], seeded["bob"]
    page = html(client.get("/services?sort=tariff&dir=desc"))
    assert row_ids(page, "service")[0] == bob["service"]  # Pro before Basic
    page = html(client.get("/operations?sort=client&dir=asc"))
    ids = row_ids(page, "operation")
    assert ids.index(alice["operation"]) < ids.index(bob["operation"])
    page = html(client.get("/outbox?sort=to&dir=asc"))
    assert row_ids(page, "email") == [3, 1, 2]  # "+evil@" sorts before "alice@", "bob@"
    assert client.get("/tasks?sort=nonsense").status_code == 200
    assert client.get("/operations?sort=&dir=").status_code == 200


# --- page numbers -------------------------------------------------------------------------


def test_page_numbers_link_first_last_and_around(app, admin, client):
    app.config["PAGE_SIZE"] = 2
    with db(app):
        for n in range(20):
            Client.create(name=f"Client {n:02}", email=f"p{n}@example.com")
    page = html(client.get("/clients?page=5&q=Client"))
    numbers = re.findall(r'aria-label="Page (\d+)"', page)
    assert numbers == ["1", "2", "3", "4", "6", "7", "10"]  # a gap of one shows the number
    assert '<span class="btn btn-sm pager-current" aria-current="page">5</span>' in page
    assert page.count('class="pager-gap"') == 1  # 8-9 are left out
    link = re.search(r'href="([^"]*)" aria-label="Page 10"', page).group(1)
    assert "page=10" in link and "q=Client" in link
    last = html(client.get("/clients?page=10&q=Client"))
    assert 'aria-label="Page 9"' in last and 'rel="next"' not in last
    # a page beyond the last shows the last
    assert 'aria-current="page">10<' in html(client.get("/clients?page=999&q=Client"))


# --- search -------------------------------------------------------------------------------


def test_orders_search_by_client_email_number_and_day(admin, client, seeded):
    alice, bob, evil = seeded["alice"], seeded["bob"], seeded["evil"]
    assert row_ids(html(client.get("/orders?q=alice")), "order") == [alice["order"]]
    assert row_ids(html(client.get("/orders?q=bob@example")), "order") == [bob["order"]]
    assert row_ids(html(client.get(f"/orders?q=%23{evil['order']}")), "order") == [evil["order"]]
    day2 = html(client.get("/orders?q=2026-03-02"))
    assert sorted(row_ids(day2, "order")) == sorted([bob["order"], evil["order"]])
    assert row_ids(html(client.get("/orders?q=2026-03-01")), "order") == [alice["order"]]
    empty = client.get("/orders?q=nobody-at-all")
    assert empty.status_code == 200 and "No orders match" in html(empty)
    # htmx: only the rows
    partial = html(client.get("/orders?q=alice", headers={**HTMX, "HX-Target": "orders-list"}))
    assert "<html" not in partial and f'id="order-{alice["order"]}"' in partial
    too_long = client.get("/orders", query_string={"q": "x" * 300})
    assert too_long.status_code == 422 and "At most 200 characters" in html(too_long)


def test_services_search_by_domain_in_params_and_remote_id(admin, client, seeded):
    alice, bob = seeded["alice"], seeded["bob"]
    assert row_ids(html(client.get("/services?q=alice-shop")), "service") == [alice["service"]]
    assert row_ids(html(client.get("/services?q=srv-1-remote")), "service") == [bob["service"]]
    assert row_ids(html(client.get("/services?q=Young")), "service") == [bob["service"]]


def test_operations_rows_name_client_and_tariff_and_search_by_client(admin, client, seeded):
    bob = seeded["bob"]
    page = html(client.get("/operations?q=Young"))
    assert row_ids(page, "operation") == [bob["operation"]]
    row = page[page.index(f'id="operation-{bob["operation"]}"') :]
    row = row[: row.index("</tr>")]
    assert "Bob Young" in row and "bob@example.com" in row and "Pro" in row
    assert row_ids(html(client.get(f"/operations?q=%23{bob['service']}")), "operation") == [
        bob["operation"]
    ]


def test_outbox_search_by_recipient_and_subject(admin, client, seeded):
    page = html(client.get("/outbox?q=Welcome Bob"))
    assert len(row_ids(page, "email")) == 1 and "bob@example.com" in page


# --- CSV ----------------------------------------------------------------------------------


def test_csv_export_applies_the_filters_escapes_and_defuses_formulas(admin, client, seeded):
    rows = csv_rows(client.get("/clients/export.csv"))
    assert rows[0] == ["Client", "Name", "Email", "Client since", "Reseller on account"]
    by_id = {int(r[0]): r for r in rows[1:]}
    evil = by_id[seeded["evil"]["client"]]
    # a formula is text again (prefixed with '), its quotes and comma survive the round trip
    assert evil[1] == "'" + FORMULA_NAME
    assert evil[2] == "'+evil@example.com"
    raw = client.get("/clients/export.csv").get_data(as_text=True)
    assert '"\'=HYPERLINK(""http://evil.example"",""click"")"' in raw
    # the search is applied; every page, not only the first
    only_bob = csv_rows(client.get("/clients/export.csv?q=Young"))
    assert [r[1] for r in only_bob[1:]] == ["Bob Young"]

    orders = csv_rows(client.get("/orders/export.csv?q=2026-03-02&sort=client&dir=asc"))
    assert [int(r[0]) for r in orders[1:]] == [seeded["evil"]["order"], seeded["bob"]["order"]]
    assert orders[1][1] == "'" + FORMULA_NAME and orders[2][4] == "20.00"

    services = csv_rows(client.get("/services/export.csv?q=alice-shop"))
    assert services[1][6] == "alice-shop.example.org" and services[1][3] == "Basic"

    ops = csv_rows(client.get("/operations/export.csv"))
    assert len(ops) == 4
    errors = {r[10] for r in ops[1:]}
    assert errors == {"'-1 is not a port, see @admin"}
    assert {r[4] for r in ops[1:]} >= {"Alice Zed", "Bob Young", "'" + FORMULA_NAME}

    outbox = csv_rows(client.get("/outbox/export.csv?q=Welcome"))
    assert len(outbox) == 4 and "'+evil@example.com" in {r[1] for r in outbox[1:]}

    tasks = csv_rows(client.get("/tasks/export.csv?status=all"))
    assert tasks[0][:5] == ["Task", "Title", "Status", "Priority", "Due"]


def test_csv_export_link_keeps_the_search_and_order(admin, client, seeded):
    page = html(client.get("/services?q=example&sort=client&dir=asc&page=1"))
    link = re.search(r'href="([^"]*export\.csv[^"]*)"', page).group(1)
    assert "q=example" in link and "sort=client" in link and "page=" not in link


def test_csv_export_needs_staff(app, client, seeded):
    response = client.get("/orders/export.csv")
    assert response.status_code in (302, 401, 403)
    assert "text/csv" not in response.headers.get("Content-Type", "")


# --- one query per page (no N+1) ------------------------------------------------------------


def count_queries(app, monkeypatch, client, url):
    """How many SQL statements the request for ``url`` runs (this thread only)."""
    counted = []
    me = threading.get_ident()
    real = type(database.obj).execute_sql

    def counting(self, sql, params=None, *args, **kwargs):
        if threading.get_ident() == me:
            counted.append(sql)
        return real(self, sql, params, *args, **kwargs)

    monkeypatch.setattr(type(database.obj), "execute_sql", counting)
    try:
        response = client.get(url)
    finally:
        monkeypatch.undo()
    assert response.status_code == 200
    return len(counted)


@pytest.mark.parametrize("url", ["/orders", "/services", "/operations", "/tasks?status=all"])
def test_lists_query_count_does_not_grow_with_rows(app, admin, client, monkeypatch, url):
    def add(n):
        with db(app):
            ptype = ProductType.get(ProductType.code == "hosting")
            department = Department.get_or_create(name="Ops")[0]
            for i in range(n):
                tariff = Tariff.create(
                    name=f"T{i}", product_type=ptype, price="1.00", internal_name=f"t{i}"
                )
                customer = Client.create(name=f"N {i}", email=f"n{i}-{n}@example.com")
                service = Service.create(client=customer, tariff=tariff, status="active")
                Order.create(
                    client=customer, tariff=tariff, service=service, amount="1.00", status="paid"
                )
                op = Operation.create(kind="suspend", service=service, status="retry_wait")
                Task.create(department=department, service=service, operation=op)

    add(2)
    few = count_queries(app, monkeypatch, client, url)
    add(10)
    many = count_queries(app, monkeypatch, client, url)
    assert many == few, f"{url}: {few} queries for 2 rows, {many} for 12"


# --- bulk actions in Current operations -----------------------------------------------------


def test_bulk_run_now_and_cancel_say_what_was_done_and_refused(app, admin, client):
    first = paid_service(admin, config={"fail_first": 1, "permanent_failures": True}, wait=None)
    admin.wait_operation(first["operation_id"], ("manual",))
    with db(app):
        other = Operation.create(kind="suspend", status="retry_wait", next_run_at=DAY2)
        done = Operation.create(kind="suspend", status="done")
    # htmx: the summary, and an event that reloads the list
    response = client.post(
        "/operations/bulk",
        data={"action": "restart", "ids": [first["operation_id"], done.id]},
        headers=HTMX,
    )
    page = html(response)
    assert response.status_code == 200 and response.headers["HX-Trigger"] == "operations-changed"
    assert "<strong>1</strong> operation queued to run now" in page
    assert f'data-refused="{done.id}"' in page and "can be run now" in page
    admin.wait_operation(first["operation_id"], ("done",))

    # without htmx: a redirect back with the same summary as a message
    response = client.post(
        "/operations/bulk",
        data={"action": "cancel", "ids": [other.id, done.id, other.id], "next": "/operations"},
    )
    assert response.status_code == 302 and response.headers["Location"].endswith("/operations")
    message = html(client.get("/operations"))
    assert f"1 operation(s) cancelled; 1 refused (#{done.id}:" in message
    with db(app):
        assert Operation.get_by_id(other.id).status == "cancelled"
        assert Operation.get_by_id(done.id).status == "done"

    # nothing ticked, a bad action, a bad id: said, nothing done
    for data in (
        {"action": "cancel"},
        {"action": "drop", "ids": [1]},
        {"action": "cancel", "ids": ["x"]},
    ):
        response = client.post("/operations/bulk", data=data, headers=HTMX)
        assert response.status_code == 200 and 'data-bulk="error"' in html(response)


def test_bulk_refuses_another_departments_operations(app, admin, client):
    mine = admin.ok("post", "/departments", {"name": "Mine"})
    theirs = paid_service(admin, config={"fail_first": 1, "permanent_failures": True}, wait=None)
    admin.wait_operation(theirs["operation_id"], ("manual",))
    make_staff(app, "sam@example.com", [mine["id"]])
    client.post("/logout")
    login(client, "sam@example.com", "staff-password")
    response = client.post(
        "/operations/bulk",
        data={"action": "cancel", "ids": [theirs["operation_id"]]},
        headers=HTMX,
    )
    assert "<strong>0</strong> operations cancelled" in html(response)
    assert "belongs to a department you are not in" in html(response)
    with db(app):
        assert Operation.get_by_id(theirs["operation_id"]).status == "manual"


def test_ticked_rows_stay_ticked_across_the_live_refresh(admin, client, seeded):
    alice = seeded["alice"]["operation"]
    partial = html(
        client.get(
            f"/operations?ids={alice}&ids=nonsense",
            headers={**HTMX, "HX-Target": "operations-live"},
        )
    )
    assert "<html" not in partial
    assert re.search(rf'value="{alice}" form="bulk-form"[^>]* checked', partial)
    assert partial.count(" checked>") == 1
    page = html(client.get("/operations"))
    assert 'hx-trigger="every 1s"' in page and 'hx-confirm="Cancel every ticked' in page


# --- on SQLite and PostgreSQL ---------------------------------------------------------------


def test_sort_search_and_csv_on_both_databases(any_app, any_api):
    """The same SQL on PostgreSQL: NULLS LAST, the priority's CASE, a LIKE over JSON text."""
    from tests.support import ADMIN

    client = any_app.test_client()
    login(client, *ADMIN)
    with db(any_app):
        ptype = ProductType.get(ProductType.code == "hosting")
        tariff = Tariff.create(name="Basic", product_type=ptype, price="5.00", internal_name="b")
        department = Department.create(name="Ops")
        ids = []
        for n, (priority, due) in enumerate([("low", DAY1), ("urgent", None), ("high", DAY2)]):
            customer = Client.create(name=f"Client {n}", email=f"c{n}@example.com")
            service = Service.create(
                client=customer,
                tariff=tariff,
                params={"domain": f"site{n}.example.org"},
                activated_at=DAY1 if n else None,
            )
            Order.create(client=customer, tariff=tariff, service=service, amount="5.00")
            op = Operation.create(kind="suspend", service=service, status="retry_wait")
            ids.append(
                Task.create(
                    department=department,
                    service=service,
                    operation=op,
                    priority=priority,
                    due_at=due,
                ).id
            )
    tasks = lambda url: row_ids(html(client.get(url)), "task")  # noqa: E731
    assert tasks("/tasks?sort=priority&dir=desc") == [ids[1], ids[2], ids[0]]
    assert tasks("/tasks?sort=due&dir=asc") == [ids[0], ids[2], ids[1]]  # no due date last
    assert tasks("/tasks?sort=due&dir=desc") == [ids[2], ids[0], ids[1]]
    assert tasks("/tasks?q=suspend&sort=assignee") == sorted(ids, reverse=True)
    assert len(row_ids(html(client.get("/services?q=site1.example")), "service")) == 1
    assert row_ids(html(client.get("/services?sort=activated&dir=asc")), "service")[-1] == 1
    assert len(row_ids(html(client.get("/operations?q=Client 2&sort=tariff")), "operation")) == 1
    assert len(row_ids(html(client.get("/orders?q=2026-03-01&sort=paid")), "order")) == 0
    for url in ("/orders", "/services", "/operations", "/tasks", "/clients", "/outbox"):
        assert len(csv_rows(client.get(f"{url}/export.csv?sort=id&dir=asc"))) >= 1
    status, body = any_api.get("/tasks?sort=due&dir=asc&q=suspend")
    assert status == 200 and [t["id"] for t in body["tasks"]] == [ids[0], ids[2], ids[1]]
