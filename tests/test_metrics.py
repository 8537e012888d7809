"""``/metrics`` for Prometheus: off unless METRICS_TOKEN or METRICS_ALLOW is set, refused
without the token or from another address (JSON 401/403), and numbers that match the
rows (parsed with prometheus_client's own parser). The workers' metrics port of
`dramatiq actors`: tests/test_scaled.py."""

import datetime as dt

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import config, scheduler
from app.models import Department, Email, Operation, ProxyClientSide, ProxyOutgoing, Task, utcnow
from tests.support import db, paid_service

TOKEN = "scrape-me-3f9a"


def samples(text):
    """{(sample name, frozenset of labels): value} of an exposition text."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(client, token=TOKEN, **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get("/metrics", headers=headers, **kw)


def test_metrics_are_off_unless_a_token_or_networks_are_set(client):
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.get_json()["error"] == {
        "code": "not_found",
        "message": "metrics are off: set METRICS_TOKEN or METRICS_ALLOW to turn them on",
        "fields": {},
    }


def test_a_scrape_without_the_token_is_refused(app, client):
    app.config["METRICS_TOKEN"] = TOKEN
    for token in (None, "wrong", TOKEN + "x"):
        response = scrape(client, token)
        assert response.status_code == 401, token
        assert response.get_json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in response.get_data(as_text=True)
    assert scrape(client).status_code == 200


def test_a_scrape_from_another_network_is_refused(app, client):
    app.config["METRICS_ALLOW"] = config.SETTINGS["METRICS_ALLOW"].parse("10.0.0.0/8, ::1")
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    # both set: both must hold
    app.config["METRICS_TOKEN"] = TOKEN
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 401
    allowed = scrape(client, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert allowed.status_code == 200
    assert scrape(client, environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 403


def test_a_bad_network_setting_stops_start_up():
    with pytest.raises(config.SettingError) as refused:
        config.load(environ={"METRICS_ALLOW": "10.0.0.0/8, the office"})
    assert refused.value.message == (
        "METRICS_ALLOW must be networks such as 10.0.0.0/8, 192.0.2.7 (separated by commas "
        'or spaces), got "10.0.0.0/8, the office"'
    )


def test_the_numbers_match_the_rows(app, api, client):
    app.config["METRICS_TOKEN"] = TOKEN
    good = paid_service(api)  # done at the first attempt
    flaky = paid_service(api, module_fields={"retry_delay": 1}, config={"fail_first": 1})
    scheduler.run_once(app)  # the heartbeat, before the rows a sweep would act on
    with db(app):
        # an operation due for two minutes that no worker took
        Operation.create(
            kind="suspend",
            module=good["module"]["id"],
            service=good["service_id"],
            status="queued",
            next_run_at=utcnow() - dt.timedelta(seconds=120),
        )
        for n in range(3):
            Email.create(to=f"x{n}@example.com", subject="s", body="b", status="outbox")
        department = Department.create(name="Forwarded")
        side = ProxyClientSide.create(
            url="http://127.0.0.1:9",
            login="me",
            password_encrypted="x",
            remote_department_id=1,
            department=department,
        )
        task = Task.create(department=department, title="Do it")
        for n in range(2):
            ProxyOutgoing.create(client_side=side, task=task, event_id=f"ev{n}", kind="comment")
    response = scrape(client)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    values = samples(response.get_data(as_text=True))

    def value(name, **labels):
        return values.get((name, frozenset(labels.items())))

    good_name, flaky_name = good["module"]["name"], flaky["module"]["name"]
    with db(app):
        welcome = Email.select().where(Email.kind == "welcome").count()
    assert value("provisor_database_up") == 1
    assert value("provisor_operations", status="done", module=good_name) == 2  # + ensure_item
    assert value("provisor_operations", status="queued", module=good_name) == 1
    assert value("provisor_operations", status="done", module=flaky_name) == 2
    assert value("provisor_attempts_total", module=flaky_name, outcome="temporary_error") == 1
    assert value("provisor_attempts_total", module=flaky_name, outcome="done") == 2
    assert value("provisor_attempt_failures_total", module=flaky_name) == 1
    assert value("provisor_attempt_failures_total", module=good_name) is None
    assert 120 <= value("provisor_oldest_due_operation_age_seconds") < 180
    assert value("provisor_overdue_operations") == 1
    assert value("provisor_emails", status="outbox") == 3 + welcome
    assert value("provisor_emails", status="sent") == 0
    assert value("provisor_proxy_pending_changes", client_side=str(side.id)) == 2
    for sweep in ("operations", "mail", "proxy"):
        assert 0 <= value("provisor_sweep_age_seconds", sweep=sweep) < 10
        assert value("provisor_sweep_failed", sweep=sweep) == 0
    # the embedded worker's own counts (Dramatiq's metric names)
    runs = value("dramatiq_messages_total", queue_name="operations", actor_name="run_operation")
    assert runs >= 5  # two ensure_item, two opens, one retry
    assert (
        value("dramatiq_messages_inprogress", queue_name="operations", actor_name="run_operation")
        is not None
    )


def test_a_database_that_does_not_answer_is_a_zero_not_an_error():
    from app import create_app
    from tests.support import free_port

    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/provisor",
            "SECRET_KEY": "x",
            "METRICS_TOKEN": TOKEN,
        }
    )
    response = scrape(app.test_client())
    assert response.status_code == 200
    values = samples(response.get_data(as_text=True))
    assert values[("provisor_database_up", frozenset())] == 0
