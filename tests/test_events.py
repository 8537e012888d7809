"""Outgoing events (webhooks): signed, delivered at least once with a capped backoff, only
the events an endpoint asked for, nothing for a change that rolls back, and a delivery log
staff can read and retry from. A real HTTP receiver on loopback (``EventReceiver``)."""

import threading
import time

import pytest

from app import signing
from app.db import write_transaction
from app.models import DeliveryAttempt, Event, EventDelivery, Service
from app.services import events
from app.states import SERVICE
from tests import support


def endpoint(api, receiver, event_types=("*",), **extra):
    return api.ok(
        "post",
        "/webhook-endpoints",
        {
            "url": receiver.url,
            "secret": receiver.secret,
            "event_types": list(event_types),
            **extra,
        },
        status=201,
    )


def fast_retries(app, timeout=1, max_attempts=30):
    app.config.update(EVENT_RETRY_DELAY=1, EVENT_RETRY_MAX=2, EVENT_TIMEOUT=timeout)
    app.config["EVENT_MAX_ATTEMPTS"] = max_attempts


def settle(receiver, seconds=0.5):
    """Wait until nothing new arrives for ``seconds``."""
    count = -1
    while count != len(receiver.received()):
        count = len(receiver.received())
        time.sleep(seconds)


def test_events_arrive_signed_and_verifiable_each_once(app, api, event_receiver):
    hook = endpoint(api, event_receiver)
    ids = support.paid_service(api)
    support.wait_for(
        lambda: event_receiver.events("service.active"), message="service.active arrives"
    )
    settle(event_receiver)
    received = event_receiver.received()
    types = [r["json"]["type"] for r in received]
    for expected in (
        "service.created",
        "service.processing",
        "service.active",
        "operation.created",
        "operation.running",
        "operation.done",
    ):
        assert expected in types, types
    # each once, signed for this endpoint's path, the id in the body and the header
    assert len({r["json"]["id"] for r in received}) == len(received)
    assert all(r["verified"] for r in received)
    for r in received:
        assert r["headers"]["X-Provisor-Event-Id"] == r["json"]["id"]
        assert r["headers"]["X-Provisor-Event"] == r["json"]["type"]
        assert r["json"]["id"].startswith("evt_")
    active = event_receiver.events("service.active")[0]
    assert active["data"] == {
        "object": "service",
        "id": ids["service_id"],
        "status": "active",
        "previous_status": "processing",
        "action": "done_open",
        "client_id": ids["client"]["id"],
        "tariff_id": ids["tariff"]["id"],
        "module_id": ids["module"]["id"],
        "remote_id": active["data"]["remote_id"],
    }
    # the scheme of the payment webhook: another secret, another path or another direction
    # does not verify
    raw, header = received[0]["raw"], received[0]["headers"][signing.HEADER]
    path = event_receiver.path
    assert signing.verify("another-secret-123456", raw, header, direction="event", path=path)
    assert signing.verify(event_receiver.secret, raw, header, direction="event", path="/x")
    assert signing.verify(event_receiver.secret, raw, header, direction="payment", path=path)
    # the delivery log: one delivered delivery per event, one attempt each
    log = api.ok("get", f"/event-deliveries?endpoint_id={hook['id']}")
    assert log["total"] == len(received)
    assert {d["status"] for d in log["deliveries"]} == {"delivered"}
    assert {d["attempts"] for d in log["deliveries"]} == {1}


def test_a_failing_receiver_gets_the_same_event_again_with_backoff(app, api, event_receiver):
    fast_retries(app)
    event_receiver.script = ["500", "timeout", "500"]
    event_receiver.slow = 2.5
    endpoint(api, event_receiver, ["service.active"])
    support.paid_service(api)
    support.wait_for(
        lambda: event_receiver.events("service.active"), timeout=30, message="delivered"
    )
    settle(event_receiver)
    tries = event_receiver.received()
    assert [t["behaviour"] for t in tries] == ["500", "timeout", "500", "200"]
    assert len({t["json"]["id"] for t in tries}) == 1  # the same event every time
    assert len({t["raw"] for t in tries}) == 1  # the same body
    gaps = [b["at"] - a["at"] for a, b in zip(tries, tries[1:], strict=False)]
    assert gaps[0] >= 0.9  # EVENT_RETRY_DELAY
    assert gaps[2] >= 1.9  # doubled, capped at EVENT_RETRY_MAX (2) after the timeout
    delivery = api.ok("get", "/event-deliveries")["deliveries"][0]
    detail = api.ok("get", f"/event-deliveries/{delivery['id']}")
    assert detail["status"] == "delivered" and detail["attempts"] == 4
    log = list(reversed(detail["attempt_log"]))
    assert [a["status_code"] for a in log] == [500, None, 500, 200]
    assert "answered 500" in log[0]["error"]
    assert "no answer within 1 s" in log[1]["error"]
    assert log[3]["error"] is None and '"received": true' in log[3]["response_excerpt"]
    assert detail["payload"]["id"] == tries[0]["json"]["id"]


def test_a_receiver_that_is_down_gets_the_event_once_it_is_back(app, api, event_receiver):
    fast_retries(app)
    endpoint(api, event_receiver, ["service.suspended"])
    ids = support.paid_service(api)
    event_receiver.stop()
    api.ok("post", f"/services/{ids['service_id']}/suspend", {}, status=202)

    def refused_twice():
        rows = api.ok("get", "/event-deliveries")["deliveries"]
        return rows and rows[0]["attempts"] >= 2 and rows[0]

    delivery = support.wait_for(refused_twice, timeout=20, message="two refused attempts")
    assert delivery["status"] in ("retry_wait", "sending")
    assert (
        "cannot reach"
        in api.ok("get", f"/event-deliveries/{delivery['id']}")["attempt_log"][-1]["error"]
    )
    event_receiver.start()
    support.wait_for(
        lambda: event_receiver.events("service.suspended"), timeout=20, message="delivered"
    )
    settle(event_receiver)
    assert len(event_receiver.received()) == 1
    event_id = event_receiver.events()[0]["id"]
    detail = api.ok("get", f"/event-deliveries/{delivery['id']}")
    assert detail["status"] == "delivered" and detail["event_id"] == event_id


def test_an_endpoint_gets_only_the_events_it_asked_for(app, api, event_receiver):
    other = support.EventReceiver(secret="other-secret-0123456789").start()
    try:
        endpoint(api, event_receiver, ["service.active", "service.suspended"])
        endpoint(api, other, ["operation.done"])
        ids = support.paid_service(api)
        api.ok("post", f"/services/{ids['service_id']}/suspend", {}, status=202)
        support.wait_for(lambda: event_receiver.events("service.suspended"), message="suspended")
        support.wait_for(
            lambda: any(e["data"]["kind"] == "suspend" for e in other.events()),
            message="the suspend's operation.done",
        )
        settle(event_receiver)
        settle(other)
        assert [e["type"] for e in event_receiver.events()] == [
            "service.active",
            "service.suspended",
        ]
        # the tariff's ensure_item, the service's open and suspend
        assert sorted(e["data"]["kind"] for e in other.events()) == [
            "ensure_item",
            "open",
            "suspend",
        ]
        assert {e["type"] for e in other.events()} == {"operation.done"}
        assert all(r["verified"] for r in other.received())
    finally:
        other.stop()


def test_a_rolled_back_change_emits_nothing(app, api, event_receiver):
    endpoint(api, event_receiver, ["service.suspended"])
    ids = support.paid_service(api)
    with support.db(app):
        before = Event.select().count()
        with pytest.raises(RuntimeError), write_transaction():
            service = Service.get_by_id(ids["service_id"])
            SERVICE.move(service, "done_suspend")
            service.save()
            assert Event.select().count() == before + 1  # written, in the transaction
            raise RuntimeError("the change fails after the move")
        assert Event.select().count() == before
        assert EventDelivery.select().count() == 0
        assert Service.get_by_id(ids["service_id"]).status == "active"
        events.sweep()
    time.sleep(1)
    assert event_receiver.received() == []
    # the same change committed is sent
    with support.db(app), write_transaction():
        service = Service.get_by_id(ids["service_id"])
        SERVICE.move(service, "done_suspend")
        service.save()
    support.wait_for(lambda: event_receiver.events("service.suspended"), message="sent")


def test_nothing_is_stored_when_no_endpoint_wants_the_event(app, api, event_receiver):
    endpoint(api, event_receiver, ["task.closed"], enabled=False)
    support.paid_service(api)
    with support.db(app):
        assert Event.select().count() == 0


def test_the_delivery_log_page_shows_each_attempt_and_retries_now(
    app, admin, client, event_receiver
):
    fast_retries(app, max_attempts=2)
    event_receiver.script = ["500", "503"]
    hook = endpoint(admin, event_receiver, ["service.active"])
    support.paid_service(admin)

    def failed():
        rows = admin.ok("get", "/event-deliveries?status=failed")["deliveries"]
        return rows and rows[0]

    delivery = support.wait_for(failed, timeout=20, message="failed after two attempts")
    app.config["METRICS_TOKEN"] = "scrape-me-0123"
    metrics = client.get("/metrics", headers={"Authorization": "Bearer scrape-me-0123"})
    assert 'provisor_event_deliveries{status="failed"} 1.0' in support.html(metrics)
    page = support.html(client.get(f"/webhooks/{hook['id']}"))
    assert "answered 500" in page and "answered 503" in page
    assert "behaviour" in page  # the start of each answer
    assert ">500<" in page and ">503<" in page
    assert "Retry now" in page
    response = client.post(f"/webhooks/deliveries/{delivery['id']}/retry")
    assert response.status_code == 302
    support.wait_for(lambda: event_receiver.events("service.active"), message="delivered")
    # the receiver has it before its answer is back: the delivery is recorded after that
    detail = support.wait_for(
        lambda: (
            (d := admin.ok("get", f"/event-deliveries/{delivery['id']}"))["status"] == "delivered"
            and d
        ),
        message="the delivery recorded",
    )
    assert detail["attempts"] == 3
    page = support.html(client.get(f"/webhooks/{hook['id']}"))
    assert ">200<" in page and "delivered" in page
    with support.db(app):
        assert DeliveryAttempt.select().count() == 3


def test_the_form_says_what_is_wrong_with_the_url_and_the_secret(app, admin, client):
    response = client.post(
        "/webhooks/new",
        data={"url": "http://10.20.30.40/hook", "secret": "short", "event_types": "service.active"},
    )
    assert response.status_code == 422
    page = support.html(response)
    assert "OUTBOUND_ALLOWED_NETWORKS" in page
    assert "From 16 to 200 characters." in page
    response = client.post("/webhooks/new", data={"url": "ftp://example.com/x", "secret": "s" * 20})
    assert response.status_code == 422
    page = support.html(response)
    assert "Must be an http:// or https:// URL with a host." in page
    assert "Choose at least one event" in page
    status, body = admin.post(
        "/webhook-endpoints",
        {"url": "http://169.254.169.254/", "secret": "s" * 20, "event_types": ["nope.x"]},
    )
    assert status == 422
    assert set(body["error"]["fields"]) == {"url", "event_types"}
    assert admin.ok("get", "/webhook-endpoints")["endpoints"] == []


def test_the_admin_page_adds_edits_and_tests_an_endpoint(app, admin, client, event_receiver):
    response = client.post(
        "/webhooks/new",
        data={
            "url": event_receiver.url,
            "secret": event_receiver.secret,
            "event_types": ["service.active", "task.closed"],
            "enabled": "on",
            "description": "Billing",
        },
    )
    assert response.status_code == 302, support.html(response)
    hook = admin.ok("get", "/webhook-endpoints")["endpoints"][0]
    assert hook["event_types"] == ["service.active", "task.closed"]
    assert "secret" not in hook
    response = client.post(f"/webhooks/{hook['id']}/test", follow_redirects=True)
    assert "delivered" in support.html(response)
    test_event = event_receiver.events("endpoint.test")[0]
    assert event_receiver.received()[0]["verified"]
    assert test_event["data"]["id"] == hook["id"]
    # a blank secret keeps the current one
    response = client.post(
        f"/webhooks/{hook['id']}/edit",
        data={"url": event_receiver.url, "secret": "", "event_types": ["*"], "enabled": "on"},
    )
    assert response.status_code == 302
    assert admin.ok("get", f"/webhook-endpoints/{hook['id']}")["event_types"] == ["*"]
    client.post(f"/webhooks/{hook['id']}/test")
    assert all(r["verified"] for r in event_receiver.received())
    assert len(event_receiver.events("endpoint.test")) == 2


def test_the_outbox_under_concurrency(any_app, any_api, event_receiver):
    """Services suspended from several threads at once while duplicate messages and sweeps
    race the worker: every event arrives, each exactly once."""
    app, api = any_app, any_api
    app.config["SWEEP_GRACE"] = 0
    endpoint(api, event_receiver, ["service.suspended"])
    services = [support.paid_service(api)["service_id"] for _ in range(6)]
    admin_id = api.ok("get", "/staff")["staff"][0]["email"]
    errors = []

    def suspend(service_id):
        try:
            with support.db(app):
                from app.services import provisioning

                provisioning.request(service_id, "suspend", admin_id)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def race():
        try:
            with support.db(app):
                for _ in range(10):
                    ids = [d.id for d in EventDelivery.select(EventDelivery.id)]
                    for delivery_id in ids:
                        events.deliver(delivery_id)
                    events.sweep()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=suspend, args=(s,)) for s in services]
    threads += [threading.Thread(target=race) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    support.wait_for(
        lambda: len(event_receiver.events()) >= len(services), timeout=30, message="all events"
    )
    settle(event_receiver)
    received = event_receiver.received()
    assert sorted(r["json"]["data"]["id"] for r in received) == sorted(services)
    assert len({r["json"]["id"] for r in received}) == len(services)
    with support.db(app):
        assert EventDelivery.select().where(EventDelivery.status == "delivered").count() == 6
        assert DeliveryAttempt.select().count() == 6


def test_the_secret_survives_a_key_change_and_rotation(app, api, event_receiver):
    from app import create_app

    hook = endpoint(api, event_receiver, ["task.closed"])
    old = app.config["SECRET_KEY"]
    both = create_app({**app.config, "SECRET_KEY": "a-new-key", "SECRET_KEY_FALLBACKS": [old]})
    result = both.test_cli_runner().invoke(args=["secrets", "rotate"])
    assert result.exit_code == 0, result.output
    assert "1 re-encrypted" in result.output
    new_only = create_app({**app.config, "SECRET_KEY": "a-new-key"})
    with support.db(new_only):
        delivery = events.send_test(hook["id"])
    assert delivery.status == "delivered", delivery.last_error
    assert [r["verified"] for r in event_receiver.received()] == [True]


def test_the_webhooks_pages_are_for_admins(app, api, event_receiver):
    """Every page and form of the Webhooks area: admins only; staff and clients get 403,
    visitors the login form, and a refused request changes nothing."""
    fast_retries(app, max_attempts=1)
    event_receiver.script = ["500"]
    hook = endpoint(api, event_receiver, ["*"])
    with support.db(app):
        delivery = events.send_test(hook["id"])
    support.make_staff(app, "sam@example.com")
    support.make_client_login(app)
    form = {"url": event_receiver.url, "secret": "", "event_types": "*", "enabled": "on"}
    routes = [
        ("get", "/webhooks", None),
        ("get", "/webhooks/new", None),
        ("post", "/webhooks/new", {**form, "secret": "x" * 20}),
        ("get", f"/webhooks/{hook['id']}", None),
        ("get", f"/webhooks/{hook['id']}/edit", None),
        ("post", f"/webhooks/{hook['id']}/edit", {**form, "description": "changed"}),
        ("post", f"/webhooks/{hook['id']}/test", {}),
        ("post", f"/webhooks/deliveries/{delivery.id}/retry", {}),
        ("post", f"/webhooks/{hook['id']}/delete", {}),
    ]

    def state():
        with support.db(app):
            return (
                [(e.id, e.description) for e in events.endpoints()],
                [(d.id, d.status, d.attempts) for d in events.deliveries()],
            )

    people = [
        (None, None),
        ("carol@example.com", "carol-password"),
        ("sam@example.com", "staff-password"),
    ]
    for email, password in people:
        browser = app.test_client()
        if email:
            support.login(browser, email, password)
        for method, path, data in routes:
            before = state()
            response = getattr(browser, method)(path, data=data)
            if email is None:
                assert response.status_code == 302, path
                assert "/login" in response.headers["Location"]
            else:
                assert response.status_code == 403, (email, path)
            assert state() == before, (email, path)
    browser = app.test_client()
    support.login(browser, *support.ADMIN)
    for method, path, data in routes:
        response = getattr(browser, method)(path, data=data)
        assert response.status_code in (200, 302), (path, support.html(response)[:300])
    assert state()[0] == [(hook["id"] + 1, "")]  # made by the form; the first one removed


def test_the_api_manages_endpoints_and_reads_the_log(app, api, event_receiver):
    hook = endpoint(api, event_receiver, ["service.active"], description="Billing")
    assert "secret" not in hook and hook["enabled"] is True
    assert "service.suspended" in api.ok("get", "/event-types")["event_types"]
    tested = api.ok("post", f"/webhook-endpoints/{hook['id']}/test")
    assert tested["status"] == "delivered" and tested["event_type"] == "endpoint.test"
    assert tested["attempt_log"][0]["status_code"] == 200
    assert tested["payload"]["id"] == tested["event_id"]
    status, body = api.post(f"/event-deliveries/{tested['id']}/retry")
    assert status == 409, body  # delivered already
    changed = api.ok(
        "put",
        f"/webhook-endpoints/{hook['id']}",
        {"url": event_receiver.url, "event_types": ["task.closed"], "enabled": False},
    )
    assert changed["event_types"] == ["task.closed"] and changed["enabled"] is False
    status, body = api.post(f"/webhook-endpoints/{hook['id']}/test")
    assert status == 422 and "enabled" in body["error"]["fields"]
    status, body = api.get("/event-deliveries?status=nope")
    assert status == 422
    assert api.ok("get", "/event-deliveries?type=endpoint.test")["total"] == 1
    api.ok("delete", f"/webhook-endpoints/{hook['id']}")
    assert api.get(f"/webhook-endpoints/{hook['id']}")[0] == 404
    assert api.ok("get", "/event-deliveries")["total"] == 0


def test_the_log_polls_while_a_delivery_waits(app, admin, client, event_receiver):
    fast_retries(app)
    # the retry waits a minute (the cap too): it is still waiting when the log is read
    app.config.update(EVENT_RETRY_DELAY=60, EVENT_RETRY_MAX=60)
    event_receiver.script = ["500"]
    hook = endpoint(admin, event_receiver, ["service.active"])
    support.paid_service(admin)
    support.wait_for(lambda: event_receiver.received(), message="the first attempt")
    support.wait_for(
        lambda: admin.ok("get", "/event-deliveries?status=retry_wait")["total"],
        message="waiting for its retry",
    )
    partial = client.get(
        f"/webhooks/{hook['id']}", headers={**support.HTMX, "HX-Target": "deliveries"}
    )
    text = support.html(partial)
    assert text.lstrip().startswith('<div id="deliveries"')
    assert 'hx-trigger="every 2s"' in text and "<html" not in text
    assert "Retry now" in text


def test_event_names_come_from_the_state_machines():
    from app.states import EVENT_TYPES, OPERATION, SERVICE, TASK, Machine

    for machine in (SERVICE, OPERATION, TASK):
        assert f"{machine.name}.created" in EVENT_TYPES
        assert {f"{machine.name}.{s}" for s in machine.statuses} <= set(EVENT_TYPES)
    # a machine that emits: each status (a new one too) is an event, with no more code
    widget = Machine("widget", statuses=("draft", "live", "gone"), final=("gone",), emits=True)
    assert widget.event_types == ("widget.created", "widget.draft", "widget.live", "widget.gone")
    assert Machine("quiet", statuses=("a",), final=()).event_types == ()


def test_the_backoff_doubles_up_to_its_cap(app):
    with app.app_context():
        # the defaults: 30 s, doubling, at most an hour
        assert [events.retry_delay(n) for n in (1, 2, 3, 7, 8, 40)] == [
            30,
            60,
            120,
            1920,
            3600,
            3600,
        ]
        fast_retries(app)
        assert [events.retry_delay(n) for n in (1, 2, 3, 4)] == [1, 2, 2, 2]


def test_the_sweep_forgets_old_finished_events_only(app, api, event_receiver):
    import datetime as dt

    from app.models import utcnow

    hook = endpoint(api, event_receiver, ["task.closed"])
    with support.db(app):
        long_ago = utcnow() - dt.timedelta(days=31)
        for name, status, when in (
            ("old delivered", "delivered", long_ago),
            ("old failed", "failed", long_ago),
            ("old waiting", "retry_wait", long_ago),
            ("recent delivered", "delivered", utcnow()),
        ):
            event = Event.create(uid=f"evt_{name}", type="task.closed", subject="task", data={})
            Event.update(created_at=when).where(Event.id == event.id).execute()
            delivery = EventDelivery.create(
                event=event,
                endpoint=hook["id"],
                status=status,
                next_try_at=utcnow() + dt.timedelta(days=1),
            )
            DeliveryAttempt.create(delivery=delivery, number=1, error="x")
        counts = events.sweep()
        assert counts["events_pruned"] == 2
        assert sorted(e.uid for e in Event.select()) == ["evt_old waiting", "evt_recent delivered"]
        assert EventDelivery.select().count() == 2 and DeliveryAttempt.select().count() == 2


def test_a_disabled_endpoint_keeps_what_waits_and_gets_it_once_enabled(app, api, event_receiver):
    from app.models import WebhookEndpoint

    hook = endpoint(api, event_receiver, ["service.suspended"])
    ids = support.paid_service(api)
    with support.db(app), write_transaction():
        service = Service.get_by_id(ids["service_id"])
        SERVICE.move(service, "done_suspend")
        service.save()
        WebhookEndpoint.update(enabled=False).where(WebhookEndpoint.id == hook["id"]).execute()
    time.sleep(1)
    with support.db(app):
        events.sweep()
        assert [d.status for d in EventDelivery.select()] == ["pending"]
    assert event_receiver.received() == []
    api.ok(
        "put",
        f"/webhook-endpoints/{hook['id']}",
        {"url": event_receiver.url, "event_types": ["service.suspended"], "enabled": True},
    )
    support.wait_for(lambda: event_receiver.events("service.suspended"), message="delivered")


def test_an_endpoint_added_inside_a_transaction_gets_its_later_events(app, api, event_receiver):
    """The enabled endpoints are read once per transaction (an activation's status changes
    share them); adding one in that transaction makes the next change read them again."""
    ids = support.paid_service(api)
    with support.db(app), write_transaction():
        service = Service.get_by_id(ids["service_id"])
        SERVICE.move(service, "done_suspend")  # no endpoint yet: nothing stored
        service.save()
        assert Event.select().count() == 0
        events.create_endpoint(
            {
                "url": event_receiver.url,
                "secret": event_receiver.secret,
                "event_types": ["service.active"],
            }
        )
        SERVICE.move(service, "done_resume")
        service.save()
        assert [e.type for e in Event.select()] == ["service.active"]
    support.wait_for(lambda: event_receiver.events("service.active"), message="sent")
