"""The scaled-out system: PostgreSQL + Redis, gunicorn, separate `dramatiq` worker processes
and one scheduler process, all real processes talking over loopback.

Skipped (with the reason) when PostgreSQL or Redis is not reachable; failing under CI=true.
"""

import json
import os
import re
import shutil
import signal
import time

import pytest
import requests

from actors.metrics import folder as worker_metrics_folder
from tests.support import BIN, ModuleEndpoint, System, free_port, start_smtp, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.scaled]


@pytest.fixture
def system(tmp_path, postgres_url, redis_url):
    controller, smtp = start_smtp(free_port())
    sys_ = System(tmp_path, postgres_url, redis_url, {"SMTP_URL": smtp.url})
    sys_.smtp = smtp
    try:
        sys_.up()
        yield sys_
    finally:
        sys_.down()
        controller.stop()


def test_whole_flow_on_postgres_redis_and_worker_processes(system):
    endpoint = ModuleEndpoint(script=["500", "500"])
    endpoint.start()
    try:
        _, module, tariff, client = system.setup_catalog(
            "http", endpoint.config(), retry_delay=1, max_attempts=3
        )
        order, op_id = system.order_and_pay(client, tariff)
        op = system.wait_done(op_id)
        assert op["attempts"] == 3
        assert [a["outcome"] for a in op["attempt_log"]] == [
            "temporary_error",
            "temporary_error",
            "done",
        ]
        assert len([c for c in endpoint.calls("open") if c["operation_id"] == op_id]) == 3
        assert list(endpoint.creations) == [op_id]
        # the worker process's records carry the operation (and attempt) they are about
        worker_log = system.log_text("worker")
        assert re.search(
            rf" WARNING app.services.operations \[\d+\] operation={op_id} attempt=1: "
            r"open, attempt 1: temporary_error: endpoint answered 500",
            worker_log,
        ), worker_log[-3000:]
        assert re.search(
            rf" INFO .* operation={op_id} attempt=3: open, attempt 3: done", worker_log
        )
        service = system.call("GET", f"/services/{order['service_id']}")
        assert service["status"] == "active"
        message = wait_for(lambda: system.smtp.messages, timeout=15)[0]
        assert message["to"] == [client["email"]]
        assert "198.51.100.7" in message["body"]
    finally:
        endpoint.stop()


def test_worker_killed_mid_operation_completes_once(system):
    """SIGKILL the worker while the endpoint is handling the call: the sweep reclaims the
    operation after its lease, a new worker runs it again with the same idempotency key,
    and the endpoint has exactly one creation for it."""
    endpoint = ModuleEndpoint(delay=1.5)
    endpoint.start()
    try:
        # the attempt's deadline leaves the 1.5 s call room on a loaded machine
        _, module, tariff, client = system.setup_catalog(
            "http", endpoint.config(timeout=5), retry_delay=1, max_attempts=3
        )
        order, op_id = system.order_and_pay(client, tariff)
        wait_for(lambda: endpoint.calls("open"), timeout=20, message="the first call")
        system.stop("worker", signal.SIGKILL)
        assert system.operation(op_id)["status"] == "running"
        system.start_worker("worker2")
        op = system.wait_done(op_id, timeout=40)
        outcomes = [a["outcome"] for a in op["attempt_log"]]
        assert outcomes[0] == "interrupted" and outcomes[-1] == "done", outcomes
        calls = [c for c in endpoint.calls("open") if c["operation_id"] == op_id]
        assert len(calls) >= 2
        assert list(endpoint.creations) == [op_id]  # one creation, however many calls
        service = system.call("GET", f"/services/{order['service_id']}")
        assert service["status"] == "active"
        assert service["remote_id"] == endpoint.creations[op_id]
        # and the welcome email went out once
        wait_for(lambda: system.smtp.messages, timeout=15)
        time.sleep(1.5)
        assert len([m for m in system.smtp.messages if m["to"] == [client["email"]]]) == 1
    finally:
        endpoint.stop()


def test_redis_flushed_while_operations_wait_for_retry(system, redis_url):
    """Redis loses every message while operations wait for their retry: none is lost."""
    import redis

    # the retries wait long enough for all five to be seen waiting (a loaded machine)
    _, module, tariff, client = system.setup_catalog(
        "sandbox", {"fail_first": 1}, retry_delay=15, max_attempts=3
    )
    ops = [system.order_and_pay(client, tariff)[1] for _ in range(5)]
    for op_id in ops:
        system.wait_done(op_id, statuses=("retry_wait",), timeout=20)
    # the worker holds prefetched delayed messages in memory: stop it, then flush Redis
    system.stop("worker")
    redis.Redis.from_url(redis_url).flushdb()
    system.start_worker("worker2")
    for op_id in ops:
        op = system.wait_done(op_id, timeout=60)
        assert op["attempts"] == 2, op
    assert "resent" in system.log_text("scheduler")


def test_health_reports_the_scaled_setup(system):
    body = requests.get(system.base + "/api/v1/health", timeout=5).json()
    assert body == {**body, "status": "ok", "database": "ok", "broker": "redis"}
    listed = json.loads(system.cli("ops", "list", "--json", "--status", "done") or "null")
    assert listed is None  # nothing has run yet on this fresh database


@pytest.fixture
def polling_system(tmp_path, postgres_url, redis_url):
    """The scaled system with the poll-based test module installed as a plugin (a
    distribution on PYTHONPATH declaring a ``provisor.modules`` entry point), and its panel."""
    from tests.modules.jobpanel import JobPanel

    plugins = tmp_path / "plugins"
    info = plugins / "jobpanel_test-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jobpanel-test\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[provisor.modules]\njobpanel = tests.modules.jobpanel:JobPanelModule\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys_ = System(tmp_path, postgres_url, redis_url, {"PYTHONPATH": f"{plugins}{os.pathsep}{root}"})
    panel = JobPanel(checks_needed=3).start()
    try:
        sys_.up()
        yield sys_, panel
    finally:
        sys_.down()
        panel.stop()


def test_a_polling_operation_survives_a_killed_worker_without_a_second_job(polling_system):
    """SIGKILL the worker while it checks a long job: the sweep reclaims the attempt, the
    next one goes on with the stored state, and the panel has exactly one job."""
    system, panel = polling_system
    _, module, tariff, client = system.setup_catalog(
        "jobpanel", panel.config(poll_after=0.5, timeout=2), retry_delay=1, max_attempts=3
    )
    order, op_id = system.order_and_pay(client, tariff)
    polling = system.wait_done(op_id, statuses=("polling",), timeout=20)
    assert polling["state"] == {"job": "job-1"}
    panel.hang_next_status = 8.0
    wait_for(panel.hanging.is_set, timeout=20, message="a check in flight")
    system.stop("worker", signal.SIGKILL)
    assert system.operation(op_id)["status"] == "running"
    system.start_worker("worker2")
    op = system.wait_done(op_id, timeout=60)
    outcomes = [a["outcome"] for a in op["attempt_log"]]
    assert "interrupted" in outcomes and outcomes[-1] == "done", outcomes
    assert panel.creations == [f"service-{order['service_id']}"]  # one job, ever
    service = system.call("GET", f"/services/{order['service_id']}")
    assert service["status"] == "active" and service["remote_id"] == "job-1"


def test_a_polling_operation_survives_a_redis_flush(polling_system, redis_url):
    """Redis loses the message of the next check: the sweep re-sends it, and the job is
    checked (not created) again."""
    import redis

    system, panel = polling_system
    _, module, tariff, client = system.setup_catalog(
        "jobpanel", panel.config(poll_after=4, timeout=2), retry_delay=1, max_attempts=2
    )
    order, op_id = system.order_and_pay(client, tariff)
    system.wait_done(op_id, statuses=("polling",), timeout=20)
    system.stop("worker")
    redis.Redis.from_url(redis_url).flushdb()
    system.start_worker("worker2")
    op = system.wait_done(op_id, timeout=60)
    assert op["failures"] == 0
    assert panel.creations == [f"service-{order['service_id']}"]
    assert "resent" in system.log_text("scheduler")


def _health(system, scope="system"):
    response = requests.get(f"{system.base}/api/v1/health?scope={scope}", timeout=5)
    return response.status_code, response.json()


def test_health_sees_a_stopped_scheduler_idle_workers_and_a_dead_broker(
    tmp_path, postgres_url, private_redis
):
    """Real processes on a Redis of the test's own: all fine is ok; the scheduler stopped
    for more than two intervals, then an operation no worker takes, then Redis killed —
    each is degraded with HTTP 503 and says why; `scope=web` minds only the broker."""
    system = System(tmp_path, postgres_url, private_redis.url)
    try:
        system.up()
        code, body = _health(system)
        assert (code, body["status"], body["redis"], body["problems"]) == (200, "ok", "ok", [])
        assert body["last_sweep_age"] < 2 and body["overdue_operations"] == 0

        system.stop("scheduler")
        system.stop("worker")
        _, module, tariff, client = system.setup_catalog("sandbox", {})
        order, op_id = system.order_and_pay(client, tariff)
        time.sleep(2.5)  # SWEEP_INTERVAL is 1 s
        code, body = _health(system)
        assert code == 503 and body["status"] == "degraded"
        assert body["last_sweep_age"] > 2
        overdue = body["overdue_operations"]  # the payment's open, the module's ensure_item
        assert overdue == 2
        assert body["problems"][0].endswith(
            "s ago (SWEEP_INTERVAL is 1 s): is the scheduler running?"
        )
        assert body["problems"][1:] == [
            "2 operations have been due for more than 2 s: are the workers running?"
        ]
        assert _health(system, "web")[0] == 200  # this web process can serve

        system.start("scheduler", [f"{BIN}/provisor", "scheduler"])
        system.start_worker("worker2")
        system.wait_done(op_id)
        wait_for(lambda: _health(system)[0] == 200, timeout=10, message="ok again")

        private_redis.kill()
        for scope in ("system", "web"):
            code, body = _health(system, scope)
            assert code == 503 and body["redis"] == "error: ConnectionError", body
            assert "the broker (Redis) does not answer a PING (ConnectionError)" in body["problems"]
    finally:
        system.down()


def test_a_stopped_worker_finishes_or_hands_back_its_attempts(tmp_path, postgres_url, redis_url):
    """SIGTERM to `dramatiq actors` (what a deploy sends) while it waits on slow panels: a
    call that ends within WORKER_SHUTDOWN_GRACE is finished and recorded; one that does
    not is handed back at once (interrupted, queued again, not a failure) and the process
    exits without waiting for the panel. A new worker completes it: one creation."""
    slow, quick = ModuleEndpoint(delay=10), ModuleEndpoint(delay=1.5)
    slow.start()
    quick.start()
    system = System(tmp_path, postgres_url, redis_url, {"WORKER_SHUTDOWN_GRACE": "3"})
    try:
        system.up()
        # a call that outlives the grace: handed back
        _, _, tariff, client = system.setup_catalog(
            "http", slow.config(timeout=30), retry_delay=1, max_attempts=3
        )
        order, op_id = system.order_and_pay(client, tariff)
        wait_for(lambda: slow.calls("open"), timeout=20, message="the call to the slow panel")
        worker = system.procs.pop("worker")
        asked = time.monotonic()
        worker.send_signal(signal.SIGTERM)  # to the main process, as Docker or Kubernetes do
        op = wait_for(
            lambda: (o := system.operation(op_id))["status"] != "running" and o,
            timeout=15,
            interval=0.1,
            message="the attempt handed back",
        )
        handed_back_after = time.monotonic() - asked
        worker.wait(timeout=10)
        exited_after = time.monotonic() - asked
        assert op["status"] == "queued" and op["failures"] == 0, op
        first = op["attempt_log"][0]
        assert first["outcome"] == "interrupted", first
        assert first["error"] == (
            "handed back: the worker was stopped (shutdown) during this attempt"
        )
        # about 1 s for Dramatiq to notice the signal, the 3 s grace, then at once: before
        # the panel answers (10 s after the call, which came before the signal; the lease
        # would run 30 + 2 s)
        assert handed_back_after < 9.5 and exited_after < 10, (handed_back_after, exited_after)
        assert "handed back the attempts of operations" in system.log_text("worker")

        system.start_worker("worker2")
        op = system.wait_done(op_id, timeout=40)
        assert [a["outcome"] for a in op["attempt_log"]] == ["interrupted", "done"]
        assert op["failures"] == 0
        assert len([c for c in slow.calls("open") if c["operation_id"] == op_id]) == 2
        assert list(slow.creations) == [op_id]  # one creation, with the same key
        service = system.call("GET", f"/services/{order['service_id']}")
        assert service["status"] == "active"

        # a call that ends within the grace: finished and recorded by the stopping worker
        _, _, tariff, client = system.setup_catalog(
            "http", quick.config(timeout=30), retry_delay=1, max_attempts=3
        )
        order, op_id = system.order_and_pay(client, tariff)
        wait_for(lambda: quick.calls("open"), timeout=20, message="the call to the quick panel")
        worker = system.procs.pop("worker2")
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=15)
        op = system.operation(op_id)
        assert op["status"] == "done" and op["attempts"] == 1, op
        assert list(quick.creations) == [op_id]
    finally:
        system.down()
        slow.stop()
        quick.stop()


def test_the_workers_serve_their_metrics_summed_over_their_processes(
    tmp_path, postgres_url, redis_url
):
    """`dramatiq actors --processes 2` with WORKER_METRICS_PORT: one port serves the sum
    of both processes' message counts (multiprocess mode), with the metrics token; the
    web's /metrics (gunicorn) has the numbers from the database."""
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    token = "scrape-the-workers"
    system = System(
        tmp_path,
        postgres_url,
        redis_url,
        {"METRICS_TOKEN": token, "WORKER_METRICS_PORT": str(port)},
    )
    main_pid = None
    try:
        system.up()
        system.stop("worker")
        system.start_worker("worker", processes=2)
        main_pid = system.procs["worker"].pid
        _, module, tariff, client = system.setup_catalog("sandbox", {}, retry_delay=1)
        ops = [system.order_and_pay(client, tariff)[1] for _ in range(6)]
        for op_id in ops:
            system.wait_done(op_id)
        headers = {"Authorization": f"Bearer {token}"}
        url = f"http://127.0.0.1:{port}/metrics"

        def scrape():
            try:
                return requests.get(url, headers=headers, timeout=2)
            except requests.RequestException:
                return None

        def counted():
            response = scrape()
            if response is None or response.status_code != 200:
                return None
            values = {
                (s.name, s.labels.get("actor_name"), s.labels.get("pid")): s.value
                for family in text_string_to_metric_families(response.text)
                for s in family.samples
            }
            runs = values.get(("dramatiq_messages_total", "run_operation", None), 0)
            return values if runs >= 7 else None  # six opens and the ensure_item

        values = wait_for(counted, timeout=20, message="the worker metrics")
        assert values.get(("dramatiq_message_errors_total", "run_operation", None), 0) == 0
        refused = requests.get(url, timeout=2)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"

        web = requests.get(f"{system.base}/metrics", headers=headers, timeout=5)
        assert web.status_code == 200
        done = [
            s.value
            for family in text_string_to_metric_families(web.text)
            for s in family.samples
            if s.name == "provisor_operations"
            and s.labels == {"status": "done", "module": module["name"]}
        ]
        assert done == [7]
        assert requests.get(f"{system.base}/metrics", timeout=5).status_code == 401
    finally:
        system.down()
        if main_pid is not None:
            shutil.rmtree(worker_metrics_folder(main_pid), ignore_errors=True)
