"""The sweeps: one row that fails does not stop the others (operations, emails, proxy
client sides), one sweep that fails does not keep the next from running, and each sweep
records its heartbeat."""

from datetime import timedelta

from app import scheduler
from app.models import (
    Attempt,
    Department,
    Email,
    Operation,
    ProxyClientSide,
    ProxyOutgoing,
    Sweep,
    Task,
    utcnow,
)
from app.services import dispatch, mail, operations
from tests.support import db, html, login, paid_service, wait_for


def _stale_running_operations(app, api, count):
    """``count`` suspend operations whose worker stopped (their lease ran out a minute
    ago), each on a service of its own."""
    ids = []
    for _ in range(count):
        paid = paid_service(api)
        with db(app):
            started = utcnow() - timedelta(seconds=120)
            op = Operation.create(
                kind="suspend",
                module=paid["module"]["id"],
                service=paid["service_id"],
                status="running",
                attempts=1,
                lease_until=utcnow() - timedelta(seconds=60),
                created_at=started,
                updated_at=started,
            )
            Attempt.create(operation=op, number=1, worker="gone:1", started_at=started)
        ids.append(op.id)
    return ids


def test_one_operation_failing_in_the_sweep_does_not_stop_the_others(app, api, client, monkeypatch):
    ids = _stale_running_operations(app, api, 3)
    broken = ids[1]
    queue_now = operations._queue_now

    def failing_for_one(op, now):
        if op.id == broken:
            raise RuntimeError("the disk is on fire")
        return queue_now(op, now)

    monkeypatch.setattr(operations, "_queue_now", failing_for_one)
    with db(app):
        counts = operations.sweep()
    assert counts["reclaimed"] == 2 and counts["errors"] == 1, counts
    for op_id in (ids[0], ids[2]):  # reclaimed, run again by the worker
        op = api.wait_operation(op_id)
        assert [a["outcome"] for a in op["attempt_log"]] == ["interrupted", "done"]
    op = api.ok("get", f"/operations/{broken}")
    assert op["status"] == "running"  # its reclaim was rolled back, nothing half done
    assert op["last_error"] == "sweep failed: RuntimeError: the disk is on fire"
    login(client, "admin@example.com", "admin-password")
    assert "sweep failed: RuntimeError: the disk is on fire" in html(
        client.get(f"/operations/{broken}")
    )
    # once the cause is gone, the next sweep reclaims it like the others
    monkeypatch.setattr(operations, "_queue_now", queue_now)
    with db(app):
        assert operations.sweep()["reclaimed"] == 1
    api.wait_operation(broken)


def _emails(app, count, status="queued"):
    with db(app):
        due = utcnow() - timedelta(seconds=30)
        return [
            Email.create(
                to=f"c{i}@example.com", subject="Hello", body="Hi", status=status, next_try_at=due
            ).id
            for i in range(count)
        ]


def test_one_email_failing_in_the_sweep_does_not_stop_the_others(app, monkeypatch):
    ids = _emails(app, 3)
    broken = ids[0]
    send = dispatch.emails

    def failing_for_one(email_ids, delay=None):
        if broken in email_ids:
            raise ConnectionError("the broker is gone")
        return send(email_ids, delay=delay)

    monkeypatch.setattr(dispatch, "emails", failing_for_one)
    with db(app):
        counts = mail.sweep()
    assert counts["email_errors"] == 1, counts

    def statuses():
        with db(app):
            return {e.id: (e.status, e.last_error) for e in Email.select()}

    # no SMTP_URL: the worker keeps the re-sent ones in the outbox
    wait_for(lambda: [statuses()[i][0] for i in ids[1:]] == ["outbox", "outbox"])
    assert statuses()[broken] == (
        "queued",
        "sweep failed: ConnectionError: the broker is gone",
    )


def test_one_client_side_failing_in_the_sweep_does_not_stop_the_others(app, monkeypatch):
    from app.services import proxy

    with db(app):
        sides = []
        for n in range(3):
            department = Department.create(name=f"Forwarded {n}")
            side = ProxyClientSide.create(
                url="http://127.0.0.1:9",
                login="me",
                password_encrypted=proxy.encrypt("secret"),
                remote_department_id=1,
                department=department,
            )
            task = Task.create(department=department, title="Do it")
            ProxyOutgoing.create(client_side=side, task=task, event_id=f"e{n}", kind="create")
            sides.append(side.id)
    broken = sides[1]
    pushed = []

    def push(side_id, delay=None):
        if side_id == broken:
            raise ValueError("a broken row")
        pushed.append(side_id)

    monkeypatch.setattr(dispatch, "proxy_push", push)
    monkeypatch.setattr(dispatch, "proxy_pull", lambda side_id, delay=None: None)
    with db(app):
        counts = proxy.sweep()
        assert counts["proxy_errors"] == 1
        assert pushed == [sides[0], sides[2]]
        errors = {s.id: s.last_error for s in ProxyClientSide.select()}
    assert errors == {
        sides[0]: None,
        broken: "sweep failed: ValueError: a broken row",
        sides[2]: None,
    }


def test_a_failing_sweep_does_not_keep_the_next_from_running(app, monkeypatch):
    """The operations sweep fails as a whole: the mail and proxy sweeps still run, and
    the heartbeat of each says how it went."""
    ids = _emails(app, 2)

    def broken_sweep():
        raise RuntimeError("no such column: operation.surprise")

    monkeypatch.setattr(operations, "sweep", broken_sweep)
    before = utcnow()
    counts, errors = scheduler.run_once(app)
    assert errors == {"operations": "RuntimeError: no such column: operation.surprise"}
    assert counts["emails_resent"] == 2

    def parked():
        with db(app):
            return [Email.get_by_id(i).status for i in ids] == ["outbox", "outbox"]

    wait_for(parked, message="the mail sweep to re-send the emails")
    with db(app):
        beats = {row.name: row for row in Sweep.select()}
    assert sorted(beats) == ["events", "mail", "operations", "proxy"]
    assert beats["operations"].last_error == "RuntimeError: no such column: operation.surprise"
    assert beats["operations"].last_ok_at is None and beats["operations"].last_run_at >= before
    for name in ("mail", "proxy", "events"):
        assert beats[name].last_error is None and beats[name].last_ok_at >= before
    # the next run is fine again: the heartbeat forgets the error, keeps the row
    monkeypatch.undo()
    counts, errors = scheduler.run_once(app)
    assert errors == {}
    with db(app):
        beat = Sweep.get(Sweep.name == "operations")
        assert Sweep.select().count() == 4
    assert beat.last_error is None and beat.last_ok_at >= before


def test_one_renewal_failing_does_not_stop_the_others(app, api, monkeypatch):
    from app.models import Service
    from app.services import provisioning

    services = []
    for _ in range(2):
        _, _, tariff, shopper = api.catalog(
            "sandbox", {"expires_in_days": 60, "renew_days_before": 30}
        )
        order = api.order(shopper["id"], tariff["id"])
        _, paid = api.pay(order)
        api.wait_operation(paid["operation_id"])
        services.append(order["service_id"])
    with db(app):  # time passes: both are due for renewal
        Service.update(expires_at=utcnow() + timedelta(days=10)).where(
            Service.id.in_(services)
        ).execute()
    broken = services[0]
    request = provisioning.request

    def failing_for_one(service_id, kind, actor, params=None):
        if service_id == broken:
            raise RuntimeError("the tariff row is corrupt")
        return request(service_id, kind, actor, params)

    monkeypatch.setattr(provisioning, "request", failing_for_one)
    with db(app):
        counts = operations.sweep()
        assert (counts["renewals"], counts["errors"]) == (1, 1), counts
        renewed = {op.service_id for op in Operation.select().where(Operation.kind == "renew")}
    assert renewed == {services[1]}


def _queued_and_due(now, count):
    """``count`` queued operations due five minutes ago (one a second later than the one
    before), their last message as old: ids in the order a sweep re-sends them."""
    return [
        Operation.create(
            kind="suspend",
            status="queued",
            next_run_at=now - timedelta(minutes=5, seconds=-i),
            dispatched_at=now - timedelta(minutes=5),
        ).id
        for i in range(count)
    ]


def test_a_sweep_resends_every_due_operation_a_batch_at_a_time(app, monkeypatch):
    """More due operations than one query reads (``limit``): one sweep re-sends all of
    them, a batch at a time, each batch's ``dispatched_at`` written in the transaction
    whose commit sends its messages; those still waiting for their backoff are skipped,
    and a batch made only of them does not stop the sweep or make it read them again."""
    app.config["SWEEP_GRACE"] = 10
    now = utcnow()
    sent = []

    def record(ids, delay=None):
        assert db_in_transaction()
        sent.append(list(ids))

    def db_in_transaction():
        from app.db import database

        return database.in_transaction()

    monkeypatch.setattr(dispatch, "operations", record)
    with db(app):
        # the oldest two were re-sent 3 times already: the next waits 10 s x 2^3
        waiting = [
            Operation.create(
                kind="suspend",
                status="retry_wait",
                next_run_at=now - timedelta(minutes=10, seconds=i),
                dispatched_at=now - timedelta(seconds=30),
                redispatches=3,
            ).id
            for i in range(2)
        ]
        due = _queued_and_due(now, 5)
        counts = operations.sweep(limit=2)
        assert counts["resent"] == 5, counts
        assert sent == [due[0:2], due[2:4], due[4:5]]
        for op in Operation.select().where(Operation.id.in_(due)):
            assert op.redispatches == 1 and op.dispatched_at >= now
        for op in Operation.select().where(Operation.id.in_(waiting)):
            assert op.redispatches == 3 and op.dispatched_at < now
        # re-sent just now: the next sweep has nothing to do; max_resent caps one sweep
        assert operations.sweep(limit=2)["resent"] == 0
        Operation.update(dispatched_at=now - timedelta(minutes=5), redispatches=0).execute()
        sent.clear()
        assert operations.sweep(limit=2, max_resent=3)["resent"] == 3
        assert sum(len(batch) for batch in sent) == 3


def test_a_resend_leaves_an_operation_claimed_since_the_sweep_read_it(any_app, monkeypatch):
    """The sweep reads the due operations, then writes their ``dispatched_at``: one claimed
    by a worker in between (now ``running``, its lease and attempts written) keeps its row
    as the worker wrote it and gets no message; the others are re-sent (both databases)."""
    any_app.config["SWEEP_GRACE"] = 10
    now = utcnow()
    sent = []
    monkeypatch.setattr(dispatch, "operations", lambda ids, delay=None: sent.append(list(ids)))
    with db(any_app):
        due = _queued_and_due(now, 3)
        lease = now + timedelta(minutes=2)
        real_transaction = operations.write_transaction

        def claimed_in_between():
            # what a worker's claim commits between the sweep's read and its write
            Operation.update(status="running", attempts=1, lease_until=lease, redispatches=0).where(
                Operation.id == due[1]
            ).execute()
            return real_transaction()

        monkeypatch.setattr(operations, "write_transaction", claimed_in_between)
        assert operations.sweep()["resent"] == 2
        assert sent == [[due[0], due[2]]]
        claimed = Operation.get_by_id(due[1])
        assert (claimed.status, claimed.redispatches) == ("running", 0)
        assert claimed.dispatched_at < now and claimed.lease_until == lease
        for op in Operation.select().where(Operation.id.in_([due[0], due[2]])):
            assert (op.status, op.redispatches) == ("queued", 1) and op.dispatched_at >= now
