"""Fixtures shared by the tests: the app on its own SQLite file, the embedded worker, real
loopback servers, the app on a real port with a browser. Plain helpers are in support.py.

Tests needing PostgreSQL, Redis or chromium are skipped (with the reason) when those are
not reachable, except under CI (``CI=true``), where they fail instead.
``PROVISOR_TEST_REDIS_URL`` chooses the Redis database the tests flush and use
(default ``redis://127.0.0.1:6379/11``).
"""

import os
import shutil
import socket
import tempfile
import threading
import time
from urllib.parse import urlsplit

# the test process uses the in-process broker; scaled tests run their own processes
for _name in (
    "REDIS_URL",
    "PROVISOR_REDIS_URL",
    "DATABASE_URL",
    "PROVISOR_DATABASE_URL",
    "SMTP_URL",
    "PROVISOR_SMTP_URL",
):
    os.environ.pop(_name, None)
os.environ.setdefault("PROVISOR_INSTANCE_PATH", tempfile.mkdtemp(prefix="provisor-test-instance-"))
# the tests' endpoints and peers listen on loopback, which Provisor refuses by default
# (OUTBOUND_ALLOWED_NETWORKS); processes the tests start inherit this
os.environ["PROVISOR_OUTBOUND_ALLOWED_NETWORKS"] = "127.0.0.0/8"

import dramatiq  # noqa: E402
import pytest  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from app import create_app, schema  # noqa: E402
from app.db import database  # noqa: E402
from tests import support  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _redis_url_of_this_process():
    """The Redis database this test process flushes and uses: ``PROVISOR_TEST_REDIS_URL``'s
    (default db 11), plus the pytest-xdist worker's number (gw0: +0, gw1: +1, ...), so that
    the processes of ``pytest -n N`` never flush each other's."""
    where = urlsplit(os.environ.get("PROVISOR_TEST_REDIS_URL") or "redis://127.0.0.1:6379/11")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    offset = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    base = int(where.path.strip("/") or 0)
    return where._replace(path=f"/{base + offset}").geturl()


REDIS_URL = _redis_url_of_this_process()


def need(condition, reason):
    """Skip with ``reason`` unless ``condition``; under CI a missing component fails."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


class _TestsOwnMessages(dramatiq.Middleware):
    """Each message carries the test that sent it; one that reaches the session's embedded
    worker after that test ended (a delayed push or retry the worker already held, which
    ``flush_all`` does not reach) is skipped instead of running against the next test's
    database (it once held that test's SQLite write lock). Last in the chain: the others
    have begun the message and end it in their ``after_skip_message``."""

    generation = 0

    def before_enqueue(self, broker, message, delay):
        message.options.setdefault("test_generation", _TestsOwnMessages.generation)

    def before_process_message(self, broker, message):
        sent_by = message.options.get("test_generation", _TestsOwnMessages.generation)
        if sent_by != _TestsOwnMessages.generation:
            raise dramatiq.middleware.SkipMessage("sent by an earlier test")


@pytest.fixture(scope="session")
def worker():
    """One embedded Dramatiq worker for the whole session (re-pointed at each test's app)."""
    import actors
    from app import embedded

    actors.broker.add_middleware(_TestsOwnMessages())
    w = embedded.start_worker(
        create_app(
            {
                "TESTING": True,
                "DATABASE_URL": "sqlite:///:memory:",
                "SECRET_KEY": "x",
                "PAYMENT_WEBHOOK_SECRET": "x",
            }
        ),
        threads=4,
    )
    yield w
    embedded.stop_worker()
    actors.broker.flush_all()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory):
    """An SQLite database with every migration applied, made once per test process: each
    test's database starts as a copy of it (:func:`_copy_of_migrated_sqlite`), and the
    ``schema.upgrade()`` of its fixture then finds nothing to do. Migrations applied to
    empty and older databases are tested in test_schema.py."""
    from app.db import init_db

    path = tmp_path_factory.mktemp("migrated") / "provisor.sqlite3"
    init_db(f"sqlite:///{path}", prepared=False)
    schema.upgrade()
    database.close()
    return path


def _copy_of_migrated_sqlite(migrated_sqlite, path):
    """``path``: a copy of the migrated database (its file, and its WAL if one is left)."""
    shutil.copyfile(migrated_sqlite, path)
    if os.path.exists(f"{migrated_sqlite}-wal"):
        shutil.copyfile(f"{migrated_sqlite}-wal", f"{path}-wal")
    return f"sqlite:///{path}"


@pytest.fixture
def app(tmp_path, worker, migrated_sqlite):
    """The app on a fresh SQLite database (a copy of the migrated one), with the embedded
    worker running its actors."""
    import actors
    from actors.middleware import AppContextMiddleware

    actors.broker.flush_all()
    _TestsOwnMessages.generation += 1
    url = _copy_of_migrated_sqlite(migrated_sqlite, tmp_path / "provisor.sqlite3")
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": url,
            "SECRET_KEY": "test-secret-key",
            "PAYMENT_WEBHOOK_SECRET": support.WEBHOOK_SECRET,
            "WTF_CSRF_ENABLED": False,
            "LEASE_GRACE": 2,
            "SWEEP_GRACE": 0,
            "MAIL_RETRY_DELAY": 1,
            "ARGON2_TIME_COST": 1,  # fast hashing for tests; production keeps the defaults
            "ARGON2_MEMORY_COST": 1024,
        }
    )
    schema.upgrade()
    AppContextMiddleware.app = app
    yield app
    actors.broker.flush_all()
    time.sleep(0.05)  # let a message in flight finish before the database goes away
    if not database.is_closed():
        database.close()


@pytest.fixture
def pg_app(app, migrated_postgres_url, worker):
    """The app (as ``app``) on a fresh PostgreSQL database instead (a copy of the migrated
    one), the embedded worker running its actors."""
    import actors
    from actors.middleware import AppContextMiddleware

    pg = create_app({**app.config, "DATABASE_URL": migrated_postgres_url})
    schema.upgrade()
    AppContextMiddleware.app = pg
    yield pg
    actors.broker.flush_all()
    time.sleep(0.05)
    if not database.is_closed():
        database.close()
    if hasattr(database.obj, "close_all"):
        database.obj.close_all()
    AppContextMiddleware.app = app


@pytest.fixture(params=["sqlite", "postgres"])
def any_app(request):
    """The app on SQLite, then on PostgreSQL (a test taking it runs on both)."""
    return request.getfixturevalue("app" if request.param == "sqlite" else "pg_app")


@pytest.fixture
def any_api(any_app):
    """An admin's bearer-token API client of ``any_app``."""
    with any_app.app_context(), database.connection_context():
        from app.services import accounts

        accounts.create_user(
            {"email": "admin@example.com", "name": "Admin", "password": "admin-password"},
            role="admin",
        )
        token = accounts.create_token("admin@example.com")
    return support.Api(any_app.test_client(), token)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def admin(client, api):
    """The test client logged in as the admin; returns the bearer-token API helper."""
    support.login(client, *support.ADMIN)
    return api


@pytest.fixture
def api(app, client):
    """An API client with an admin's bearer token (see ``tests/support.py``)."""
    with app.app_context(), database.connection_context():
        from app.services import accounts

        accounts.create_user(
            {"email": "admin@example.com", "name": "Admin", "password": "admin-password"},
            role="admin",
        )
        token = accounts.create_token("admin@example.com")
    return support.Api(client, token)


@pytest.fixture
def http_endpoint():
    """A real HTTP server on loopback speaking the http module's protocol."""
    server = support.ModuleEndpoint()
    server.start()
    yield server
    server.stop()


class SandboxHold:
    """Sandbox panel calls held at the panel while ``hold()`` is in force: a test that must
    see an operation under way holds it there for as long as it looks, instead of racing a
    ``latency_ms`` against the machine's speed."""

    def __init__(self):
        self.released = threading.Event()
        self.released.set()
        self.kinds, self.from_attempt = (), 1

    def hold(self, *kinds, from_attempt=1):
        """Hold the calls of these operation kinds (of every kind: none given), from this
        attempt of the operation on."""
        self.kinds, self.from_attempt = kinds, from_attempt
        self.released.clear()

    def holds(self, ctx):
        return (
            not self.released.is_set()
            and (not self.kinds or ctx.kind in self.kinds)
            and ctx.attempt_number >= self.from_attempt
        )

    def release(self):
        self.released.set()


@pytest.fixture
def sandbox_hold(monkeypatch):
    """A ``SandboxHold`` on every sandbox module of the process (the embedded worker's
    attempts included); released at the end of the test."""
    from modules.sandbox import SandboxModule

    hold = SandboxHold()
    simulate = SandboxModule._simulate

    def held(self, ctx, failures=True):
        if hold.holds(ctx):
            hold.released.wait(60)  # a test that never releases fails on its own wait
        return simulate(self, ctx, failures)

    monkeypatch.setattr(SandboxModule, "_simulate", held)
    yield hold
    hold.release()


@pytest.fixture
def event_receiver():
    """A webhook endpoint for outgoing events on loopback (``support.EventReceiver``)."""
    receiver = support.EventReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on a free loopback port."""
    controller, handler = support.start_smtp(support.free_port())
    yield handler
    controller.stop()


def _reachable(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_server():
    """Connection settings of the PostgreSQL server (skips or fails when unreachable)."""
    need(_reachable("127.0.0.1", 5432), "PostgreSQL is not reachable on 127.0.0.1:5432")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        need(False, "psycopg2 is not installed (pip install -e '.[test]')")
    user = os.environ.get("PGUSER", "postgres")
    return f"postgresql://{user}@127.0.0.1:5432"


def _fresh_postgres_database(postgres_server, template=None):
    """A new PostgreSQL database (empty, or a copy of ``template``): yields its URL, drops
    it afterwards."""
    import uuid

    import psycopg2

    name = f"provisor_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = psycopg2.connect(postgres_server + "/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        if template:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{postgres_server}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    yield from _fresh_postgres_database(postgres_server)


@pytest.fixture(scope="session")
def migrated_postgres(postgres_server):
    """The name of a PostgreSQL database with every migration applied, made once per test
    process and closed to connections, so that it can be copied (``CREATE DATABASE ...
    TEMPLATE``: 0.1 s, where applying the migrations takes 1.3 s)."""
    import psycopg2

    from app.db import init_db

    databases = _fresh_postgres_database(postgres_server)
    url = next(databases)
    try:
        init_db(url, pool_size=1, prepared=False)
        schema.upgrade()
        database.close()
        database.obj.close_all()
        name = url.rsplit("/", 1)[1]
        admin = psycopg2.connect(postgres_server + "/postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.close()
        yield name
    finally:
        databases.close()  # dropped


@pytest.fixture
def migrated_postgres_url(postgres_server, migrated_postgres):
    """A fresh PostgreSQL database for one test, a copy of the migrated one, dropped
    afterwards."""
    yield from _fresh_postgres_database(postgres_server, template=migrated_postgres)


@pytest.fixture
def pg_api(app, migrated_postgres_url):
    """The ``app`` fixture's settings on a fresh PostgreSQL database, the embedded worker
    running for it, and an admin's API client (``pg_api.app`` is that app)."""
    yield from _pg_api(app, migrated_postgres_url)


@pytest.fixture
def pg_api_pool_of_2(app, migrated_postgres_url):
    """``pg_api`` with a pool of 2 connections per process (``DB_POOL_SIZE``): fewer than
    the embedded worker's 4 threads."""
    yield from _pg_api(app, migrated_postgres_url, DB_POOL_SIZE=2)


def _pg_api(app, postgres_url, **config):
    import actors
    from actors.middleware import AppContextMiddleware
    from app.services import accounts

    pg = create_app({**app.config, "DATABASE_URL": postgres_url, **config})
    schema.upgrade()
    AppContextMiddleware.app = pg
    with pg.app_context(), database.connection_context():
        accounts.create_user(
            {"email": "admin@example.com", "name": "Admin", "password": "admin-password"},
            role="admin",
        )
        token = accounts.create_token("admin@example.com")
    api = support.Api(pg.test_client(), token)
    api.app = pg
    yield api
    actors.broker.flush_all()
    time.sleep(0.05)
    if not database.is_closed():
        database.close()
    AppContextMiddleware.app = app


@pytest.fixture
def make_postgres_database(postgres_server):
    """A factory of further fresh PostgreSQL databases (URLs), all dropped afterwards."""
    made = []

    def make():
        databases = _fresh_postgres_database(postgres_server)
        made.append(databases)
        return next(databases)

    yield make
    for databases in made:
        databases.close()  # dropped


@pytest.fixture(scope="session")
def redis_url():
    """A Redis database number of its own, flushed before and after."""
    where = urlsplit(REDIS_URL)
    host, port = where.hostname or "127.0.0.1", where.port or 6379
    need(_reachable(host, port), f"Redis is not reachable on {host}:{port}")
    import redis

    url = REDIS_URL
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    yield url
    conn.flushdb()


@pytest.fixture(scope="session")
def powerdns(tmp_path_factory):
    """A real PowerDNS server (pdns-server + sqlite3 backend) for the session; each test
    makes and removes its own zones."""
    need(
        support.PowerDNS.available(),
        "PowerDNS is not installed (apt-get install pdns-server pdns-backend-sqlite3)",
    )
    server = support.PowerDNS(str(tmp_path_factory.mktemp("pdns"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb_server():
    """Connection settings of the MariaDB server (root without password on loopback)."""
    need(
        _reachable(support.MARIADB["host"], support.MARIADB["port"]),
        "MariaDB is not reachable on 127.0.0.1:3306",
    )
    return dict(support.MARIADB)


@pytest.fixture
def mariadb(mariadb_server):
    """The machine's MariaDB for one test: an admin of its own (ALL PRIVILEGES WITH GRANT
    OPTION, a password with quotes in it) and a name prefix; everything dropped after."""
    tenant = support.MariaDBTenant(mariadb_server)
    tenant.make_admin()
    yield tenant
    tenant.cleanup()


@pytest.fixture(scope="session")
def ssh_server():
    """Debian's OpenSSH server of the tests' own (``support.SSHServer``) for the session;
    each test authorizes its own key (``ssh_host``)."""
    need(support.SSHServer.unavailable() is None, str(support.SSHServer.unavailable()))
    server = support.SSHServer(tempfile.mkdtemp(prefix="provisor-sshd-")).start()
    yield server
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture
def ssh_host(ssh_server):
    """That sshd for one test: a throwaway key authorized for root, a throwaway user with a
    password, the example scripts; every user, key and process it made removed after."""
    host = support.SSHHost(ssh_server)
    yield host
    host.cleanup()


@pytest.fixture(scope="session")
def postgres_cluster():
    """A PostgreSQL server of the tests' own with SCRAM passwords and TLS (see
    ``support.PostgresCluster``), for the session."""
    need(
        support.PostgresCluster.available(),
        "PostgreSQL's initdb is not installed (apt-get install postgresql)",
    )
    folder = tempfile.mkdtemp(prefix="provisor-pg-")
    cluster = support.PostgresCluster(folder).start()
    yield cluster
    cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def restartable_postgres():
    """A PostgreSQL server of one test module's own (``support.PostgresCluster``), which
    its tests may stop and restart (the machine's server is shared); each test makes its
    databases with ``create_database``. Removed with its data after the module."""
    need(
        support.PostgresCluster.available(),
        "PostgreSQL's initdb is not installed (apt-get install postgresql)",
    )
    folder = tempfile.mkdtemp(prefix="provisor-pg-faults-")
    cluster = support.PostgresCluster(folder).start()
    yield cluster
    cluster.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgresql(postgres_cluster):
    """That PostgreSQL server for one test: an admin role of its own (CREATEDB CREATEROLE,
    not a superuser) and a name prefix; everything dropped after."""
    tenant = support.PostgresTenant(postgres_cluster)
    tenant.make_admin()
    yield tenant
    tenant.cleanup()


@pytest.fixture
def machine_postgresql(postgres_server):
    """The machine's PostgreSQL (127.0.0.1:5432) for one test, like ``postgresql``."""
    tenant = support.PostgresTenant()
    tenant.make_admin()
    yield tenant
    tenant.cleanup()


@pytest.fixture(scope="session")
def schemathesis_cli():
    """schemathesis's ``st`` command (in the test extra)."""
    path = os.path.join(support.BIN, "st")
    need(os.path.exists(path), "schemathesis is not installed (pip install -e '.[test]')")
    return path


@pytest.fixture(scope="session")
def chromium_path():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    need(path is not None, "chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
def live_app(tmp_path, worker, migrated_sqlite):
    """The app with CSRF on and sandbox payments, served on a loopback port."""
    import actors
    from actors.middleware import AppContextMiddleware

    actors.broker.flush_all()
    _TestsOwnMessages.generation += 1
    url = _copy_of_migrated_sqlite(migrated_sqlite, tmp_path / "provisor.sqlite3")
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": url,
            "SECRET_KEY": "browser-test-secret",
            "PAYMENT_WEBHOOK_SECRET": support.WEBHOOK_SECRET,
            "WTF_CSRF_ENABLED": True,
            "SANDBOX_PAYMENTS": True,
            "ALLOW_REGISTRATION": True,
            "LEASE_GRACE": 2,
            "SWEEP_GRACE": 0,
        }
    )
    schema.upgrade()
    AppContextMiddleware.app = app
    server = make_server("127.0.0.1", support.free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app.config["BASE_URL"] = f"http://127.0.0.1:{server.server_port}"
    yield app
    server.shutdown()
    thread.join(5)
    actors.broker.flush_all()
    time.sleep(0.05)
    if not database.is_closed():
        database.close()


@pytest.fixture
def chromium(chromium_path):
    """Debian's chromium driven by Playwright (see support.CHROMIUM_ARGS)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, args=support.CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of this test's own, which it may kill (support.RedisServer)."""
    need(support.RedisServer.available(), "redis-server is not installed (apt-get install redis)")
    server = support.RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def scripted_peer():
    """A tasks proxy peer on loopback whose answers the test scripts (tests/support.py)."""
    peer = support.ScriptedPeer()
    yield peer
    peer.stop()
