"""``GET /api/v1/health``: the database, the broker, the scheduler's heartbeat and the
operations no worker took; ``degraded`` with HTTP 503 and the reasons when something is
wrong. (A stopped scheduler and a dead Redis with real processes: tests/test_scaled.py.)
Every other route answers a database that does not answer with 503 and ``Retry-After``
(with a real PostgreSQL stopped under gunicorn: tests/test_faults.py)."""

import datetime as dt

from app import create_app, scheduler, schema
from app.models import Operation, Sweep, utcnow
from tests.support import db, free_port, paid_service


def test_all_fine_is_ok(app, client):
    scheduler.run_once(app)
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.get_json()
    assert "Retry-After" not in response.headers
    assert body == {
        **body,
        "status": "ok",
        "database": "ok",
        "broker": "embedded",
        "redis": None,
        "overdue_operations": 0,
        "problems": [],
    }
    assert 0 <= body["last_sweep_age"] < 5
    assert response.headers["Cache-Control"] == "no-store"


def test_no_sweep_for_two_intervals_is_degraded(app, client):
    scheduler.run_once(app)
    interval = app.config["SWEEP_INTERVAL"]
    with db(app):  # the scheduler stopped 3 intervals ago
        Sweep.update(last_run_at=utcnow() - dt.timedelta(seconds=3 * interval)).execute()
    response = client.get("/api/v1/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["last_sweep_age"] >= 3 * interval
    assert body["problems"] == [
        f"the last sweep ran {3 * interval} s ago (SWEEP_INTERVAL is {interval} s): "
        "is the scheduler running?"
    ]
    # a load balancer or a monitor is told when asking again is worth it: the next sweep
    assert response.headers["Retry-After"] == str(interval)
    # a load balancer asks only about this process: it can serve
    assert client.get("/api/v1/health?scope=web").status_code == 200


def test_never_swept_is_degraded(client):
    body = client.get("/api/v1/health").get_json()
    assert body["status"] == "degraded" and body["last_sweep_at"] is None
    assert body["problems"] == ["no sweep has run yet: is the scheduler running?"]


def test_operations_no_worker_took_are_degraded(app, api, client):
    paid = paid_service(api)
    interval = app.config["SWEEP_INTERVAL"]
    scheduler.run_once(app)
    with db(app):  # due for three intervals, and no worker took it
        Operation.update(
            status="queued", next_run_at=utcnow() - dt.timedelta(seconds=3 * interval)
        ).where(Operation.id == paid["operation_id"]).execute()
    body = client.get("/api/v1/health").get_json()
    assert body["overdue_operations"] == 1
    assert body["problems"] == [
        f"1 operations have been due for more than {2 * interval} s: are the workers running?"
    ]


def test_a_failing_sweep_is_degraded(app, client, monkeypatch):
    from app.services import mail

    def broken():
        raise RuntimeError("secret details stay in the log")

    monkeypatch.setattr(mail, "sweep", broken)
    scheduler.run_once(app)
    response = client.get("/api/v1/health")
    assert response.status_code == 503
    problems = response.get_json()["problems"]
    assert problems == ["the mail sweep failed (RuntimeError); see the scheduler's log"]
    assert "secret" not in response.get_data(as_text=True)


def test_database_unreachable_is_degraded(tmp_path):
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/provisor"
    app = create_app({"TESTING": True, "DATABASE_URL": url, "SECRET_KEY": "x"})
    response = app.test_client().get("/api/v1/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body == {
        **body,
        "status": "degraded",
        "database": "error: OperationalError",
        "problems": ["the database does not answer (OperationalError)"],
    }
    assert response.headers["Retry-After"] == "5"  # as every route answers meanwhile
    assert "hunter2" not in response.get_data(as_text=True)


def test_every_route_answers_503_with_retry_after_while_the_database_is_down():
    """Pages, their forms, the API, the payment webhook and the peer API: a 503 saying
    to come back (``Retry-After``), JSON or a page of its own, never a 500 or a
    traceback; static files need no database and are still served."""
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/provisor"
    app = create_app(
        {"TESTING": True, "DATABASE_URL": url, "SECRET_KEY": "x", "PAYMENT_WEBHOOK_SECRET": "x"}
    )
    client = app.test_client()
    bearer = {"Authorization": "Bearer some-token"}
    pages = [
        client.get("/"),
        client.get("/login"),
        client.post("/login", data={"email": "a@example.com", "password": "pw"}),
        client.get("/operations"),
        client.get("/operations", headers={"HX-Request": "true"}),
        client.get("/services/1"),
        client.get("/my"),
    ]
    for response in pages:
        assert (response.status_code, response.mimetype) == (503, "text/html"), response
        assert response.headers["Retry-After"] == "5"
        text = response.get_data(as_text=True)
        assert "Temporarily unavailable" in text and "cannot reach its database" in text
        assert "hunter2" not in text and "Traceback" not in text
    calls = [
        client.get("/api/v1/services", headers=bearer),
        client.post("/api/v1/orders", json={"client_id": 1, "tariff_id": 1}, headers=bearer),
        client.post(
            "/api/v1/webhooks/payment", data=b"{}", headers={"X-Provisor-Signature": "t=1,v1=0"}
        ),
        client.get("/proxy/v1/tasks", headers={"Authorization": "Basic cGVlcjpwdw=="}),
    ]
    for response in calls:
        assert (response.status_code, response.mimetype) == (503, "application/json"), response
        assert response.headers["Retry-After"] == "5"
        assert response.get_json() == {
            "error": {
                "code": "unavailable",
                "message": "the database is not available; try again shortly",
                "fields": {},
            }
        }
    assert client.get("/static/app.css").status_code == 200


def test_a_database_fault_of_the_set_up_is_still_a_500(tmp_path):
    """SQLite's "no such table" (a database never upgraded) is an OperationalError too,
    but waiting will not mend it: 500, not 503."""
    app = create_app(
        {"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path}/empty.sqlite3", "SECRET_KEY": "x"}
    )
    response = app.test_client().get("/api/v1/services", headers={"Authorization": "Bearer t"})
    assert response.status_code == 500 and "Retry-After" not in response.headers
    assert response.get_json()["error"]["code"] == "internal"


def test_redis_unreachable_is_degraded(tmp_path):
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path}/provisor.sqlite3",
            "REDIS_URL": f"redis://:hunter2@127.0.0.1:{free_port()}/0",
            "SECRET_KEY": "x",
        }
    )
    with app.app_context():
        schema.upgrade()
    scheduler.run_once(app)
    response = app.test_client().get("/api/v1/health?scope=web")
    assert response.status_code == 503
    body = response.get_json()
    assert (body["broker"], body["redis"]) == ("redis", "error: ConnectionError")
    assert body["problems"] == ["the broker (Redis) does not answer a PING (ConnectionError)"]
    assert response.headers["Retry-After"] == "5"
    assert "hunter2" not in response.get_data(as_text=True)


def test_a_bad_scope_is_refused(client):
    response = client.get("/api/v1/health?scope=everything")
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"scope": "One of: system, web"}
