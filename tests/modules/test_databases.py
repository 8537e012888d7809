"""The mariadb and postgresql module types against real servers: what a client can do
with the details of the welcome email after each operation, isolation between services,
ownership, connection limits, the admin's rights, TLS, and how failures are classified.

Each test runs once per server (``server``): the machine's MariaDB, and a PostgreSQL
server of the tests' own that checks passwords with SCRAM (``postgres_cluster``: the
machine's PostgreSQL trusts every loopback login, so a wrong password would pass there);
one test runs a service's whole life on the machine's PostgreSQL too. Every test has its
own admin (whose password has quotes, a backslash and a semicolon in it) and name prefix;
what it made is dropped afterwards, also when it fails.
"""

import uuid
from datetime import timedelta

import psycopg2
import pymysql
import pytest

import modules
from app.db import database
from app.models import Attempt, Email, Operation, Service, utcnow
from app.services import operations
from modules.base import OperationContext
from tests.support import free_port

LABELS = {
    "Host": "host",
    "Port": "port",
    "Database name": "database",
    "Username": "username",
    "Password": "password",
}

DRIVER_ERRORS = (pymysql.err.MySQLError, psycopg2.Error)


class Killed(BaseException):
    """The worker died: raised where the result would have been recorded."""


@pytest.fixture(params=["mariadb", "postgresql"])
def server(request):
    """The database server of the test (a tenant of it: see tests/support.py)."""
    return request.getfixturevalue(request.param)


def refused(server, details):
    """The server's words when a service's user logs in with ``details`` (None: it got in)."""
    try:
        server.login(details).close()
    except Exception as exc:  # the driver's error: what the client would see
        return str(exc)
    return None


class Databases:
    """A database module on the test's server, its tariffs and orders, run by the test."""

    def __init__(self, app, api, engine, server, test_connection=True, **config):
        self.app, self.api, self.engine, self.server = app, api, engine, server
        department = api.ok("post", "/departments", {"name": f"DB {uuid.uuid4().hex[:6]}"})
        self.module = api.ok(
            "post",
            "/modules",
            {
                "name": f"{server.type_id}-{uuid.uuid4().hex[:6]}",
                "type": server.type_id,
                "config": server.config(**config),
                "department_id": department["id"],
                "retry_delay": 1,
                "test_connection": test_connection,
            },
            status=201,
        )
        self.client = self.new_client()

    def new_client(self):
        tag = uuid.uuid4().hex[:6]
        return self.api.ok("post", "/clients", {"name": "Erin", "email": f"erin-{tag}@example.com"})

    def tariff(self, connection_limit=0, expect="done"):
        name = f"db-{uuid.uuid4().hex[:8]}"
        tariff = self.api.ok(
            "post",
            "/tariffs",
            {
                "name": f"Database {name}",
                "product_type": "database",
                "price": "3",
                "internal_name": name,
                "module_ids": [self.module["id"]],
                "item_settings": {str(self.module["id"]): {"connection_limit": connection_limit}},
            },
            status=201,
        )
        for op in self.engine.run_all():  # ensure_item
            assert op.status == expect, op.last_error
        return tariff

    def open(self, tariff, prefix=None, client=None):
        params = {"prefix": prefix} if prefix else {}
        order = self.api.order((client or self.client)["id"], tariff["id"], params)
        code, paid = self.api.pay(order)
        assert code == 200, paid
        return order["service_id"], self.engine.run(paid["operation_id"])

    def request(self, service_id, kind, **params):
        op = self.api.ok("post", f"/services/{service_id}/{kind}", params, status=202)
        return self.engine.run(op["id"])

    def details(self, service_id):
        return self.api.ok("get", f"/services/{service_id}")["details"]

    def welcome(self, service_id):
        """The details as the client read them in the welcome email."""
        with self.app.app_context(), database.connection_context():
            (email,) = Email.select().where(Email.service == service_id)
        found = {}
        for line in email.body.splitlines():
            label, _, value = line.partition(": ")
            if label in LABELS:
                found[LABELS[label]] = value
        return found

    def log(self, op_id):
        with self.app.app_context(), database.connection_context():
            return "\n".join(
                a.log or "" for a in Attempt.select().where(Attempt.operation == op_id)
            )


@pytest.fixture
def dbs(app, api, engine, server):
    return Databases(app, api, engine, server)


def test_the_client_uses_the_database_with_the_welcome_emails_details(dbs, server):
    tariff = dbs.tariff()
    service_id, op = dbs.open(tariff)
    assert op.status == "done", op.last_error
    name = f"{server.prefix}{service_id}"
    details = dbs.welcome(service_id)
    assert details == dbs.details(service_id)
    assert details["host"] == "127.0.0.1" and details["port"] == str(server.port)
    assert details["database"] == details["username"] == name
    assert len(details["password"]) == 24
    conn = server.login(details)
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE notes (id INT PRIMARY KEY, body VARCHAR(40))")
        cursor.execute("INSERT INTO notes VALUES (1, 'hello')")
        cursor.execute("SELECT body FROM notes")
        assert cursor.fetchall()[0][0] == "hello"
    conn.close()
    found = server.lookup(name)
    assert found["database"] and found["user"] and not found["locked"]
    mark = f"{server.owner_tag}:service-{service_id}"
    assert found["comment"] == mark
    service = dbs.api.ok("get", f"/services/{service_id}")
    assert service["status"] == "active" and service["remote_id"] == name
    engine = "MariaDB 10." if server.type_id == "mariadb" else "PostgreSQL 1"
    assert service["module_data"]["server"].startswith(engine)  # the client sees which
    # a wrong password is refused: the password is really checked
    assert refused(server, {**details, "password": "not-" + details["password"]})
    log = dbs.log(op.id)
    assert f"CONNECT {server.type_id}://{server.admin_user}@127.0.0.1:{server.port}" in log
    assert details["password"] not in log and server.admin_password not in log


def test_the_host_for_clients_is_what_the_details_and_the_welcome_email_say(
    app, api, engine, server
):
    """``client_host``: Provisor connects to ``host``, clients are told the other name."""
    dbs = Databases(app, api, engine, server, client_host="localhost")
    service_id, op = dbs.open(dbs.tariff())
    assert op.status == "done", op.last_error
    details = dbs.details(service_id)
    assert details["host"] == "localhost" and details["port"] == str(server.port)
    assert dbs.welcome(service_id) == details
    assert f"CONNECT {server.type_id}://{server.admin_user}@127.0.0.1:{server.port}" in dbs.log(
        op.id
    )
    server.login(details).close()  # the same server, reached by its other name here


def test_another_services_user_cannot_get_into_the_database(dbs, server):
    tariff = dbs.tariff()
    first, _ = dbs.open(tariff)
    second, _ = dbs.open(tariff, client=dbs.new_client())
    mine, theirs = dbs.details(first), dbs.details(second)
    conn = server.login(mine)
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE secrets (body VARCHAR(40))")
        cursor.execute("INSERT INTO secrets VALUES ('only mine')")
    conn.close()
    said = refused(server, {**theirs, "database": mine["database"]})
    assert said is not None
    assert (
        ("Access denied" in said)
        if server.type_id == "mariadb"
        else ("permission denied for database" in said)
    ), said
    if server.type_id == "mariadb":  # from its own database, by the qualified name
        conn = server.login(theirs)
        with pytest.raises(Exception, match="SELECT command denied"), conn.cursor() as cursor:
            cursor.execute(f"SELECT * FROM `{mine['database']}`.secrets")
        conn.close()


def test_suspend_locks_the_user_out_and_ends_its_sessions_resume_lets_it_back(dbs, server):
    service_id, op = dbs.open(dbs.tariff())
    details = dbs.details(service_id)
    held = server.login(details)
    with held.cursor() as cursor:
        cursor.execute("CREATE TABLE kept (body VARCHAR(40))")
        cursor.execute("INSERT INTO kept VALUES ('still here')")

    op = dbs.request(service_id, "suspend")
    assert op.status == "done", op.last_error
    assert "1 open session(s) ended" in dbs.log(op.id)
    with pytest.raises(DRIVER_ERRORS), held.cursor() as cursor:  # its session was ended
        cursor.execute("SELECT 1")
    said = refused(server, details)
    assert said is not None
    assert (
        ("locked" in said) if server.type_id == "mariadb" else ("not permitted to log in" in said)
    )
    assert server.lookup(details["database"])["locked"]
    assert dbs.api.ok("get", f"/services/{service_id}")["status"] == "suspended"

    assert dbs.request(service_id, "resume").status == "done"
    conn = server.login(details)
    with conn.cursor() as cursor:
        cursor.execute("SELECT body FROM kept")
        assert cursor.fetchall()[0][0] == "still here"
    conn.close()
    assert dbs.api.ok("get", f"/services/{service_id}")["status"] == "active"

    op = dbs.request(service_id, "close")
    assert op.status == "done", op.last_error
    found = server.lookup(details["database"])
    assert not found["database"] and not found["user"]
    assert refused(server, details)
    assert dbs.api.ok("get", f"/services/{service_id}")["status"] == "deleted"


def test_change_password_the_new_one_logs_in_and_the_old_one_no_more(dbs, server):
    service_id, _ = dbs.open(dbs.tariff())
    old = dbs.details(service_id)
    held = server.login(old)
    with held.cursor() as cursor:
        cursor.execute("CREATE TABLE kept (body VARCHAR(40))")
        cursor.execute("INSERT INTO kept VALUES ('still here')")
    held.commit()

    op = dbs.request(service_id, "change_password")
    assert op.status == "done", op.last_error
    new = dbs.details(service_id)
    assert new["password"] != old["password"] and len(new["password"]) == 24
    assert {k: v for k, v in new.items() if k != "password"} == {
        k: v for k, v in old.items() if k != "password"
    }
    said = refused(server, old)
    assert said is not None and ("Access denied" in said or "authentication failed" in said)
    conn = server.login(new)
    with conn.cursor() as cursor:
        cursor.execute("SELECT body FROM kept")
        assert cursor.fetchall()[0][0] == "still here"
    conn.close()
    held.close()
    log = dbs.log(op.id)
    assert "PASSWORD '********'" in log
    assert new["password"] not in log and old["password"] not in log
    assert server.admin_password not in log
    with dbs.app.app_context(), database.connection_context():
        email = Email.get((Email.service == service_id) & (Email.kind == "notice_change_password"))
    assert f"New password: {new['password']}" in email.body

    # staff may choose it; a suspended service gets none (the user could not log in anyway)
    op = dbs.request(service_id, "change_password", password="Chosen-by-staff-1;'\\")
    assert op.status == "done", op.last_error
    server.login({**new, "password": "Chosen-by-staff-1;'\\"}).close()
    assert refused(server, new)
    assert dbs.request(service_id, "suspend").status == "done"
    code, body = dbs.api.post(f"/services/{service_id}/change_password", {})
    assert code == 409 and "needs it to be active" in body["error"]["message"]


def test_the_whole_life_on_the_machines_postgresql(app, api, engine, machine_postgresql):
    server = machine_postgresql
    dbs = Databases(app, api, engine, server)
    service_id, op = dbs.open(dbs.tariff(connection_limit=3))
    assert op.status == "done", op.last_error
    details = dbs.welcome(service_id)
    conn = server.login(details)
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE t (n INT)")
        cursor.execute("INSERT INTO t VALUES (7)")
    conn.close()
    assert server.lookup(details["database"])["connection_limit"] == 3
    assert dbs.request(service_id, "suspend").status == "done"
    assert "not permitted to log in" in refused(server, details)
    assert dbs.request(service_id, "resume").status == "done"
    conn = server.login(details)
    with conn.cursor() as cursor:
        cursor.execute("SELECT n FROM t")
        assert cursor.fetchall() == [(7,)]
    conn.close()
    assert dbs.request(service_id, "close").status == "done"
    found = server.lookup(details["database"])
    assert not found["database"] and not found["user"]


def test_an_attempt_killed_after_creating_is_taken_over_with_the_same_password(
    app, dbs, server, monkeypatch
):
    tariff = dbs.tariff()
    order = dbs.api.order(dbs.client["id"], tariff["id"], {})
    _, paid = dbs.api.pay(order)
    op_id, service_id = paid["operation_id"], order["service_id"]

    def die(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(operations, "_record_result", die)
        with pytest.raises(Killed), app.app_context(), database.connection_context():
            operations.run(op_id)
    name = f"{server.prefix}{service_id}"
    assert server.lookup(name)["database"]  # the first attempt created it
    with app.app_context(), database.connection_context():
        Operation.update(lease_until=utcnow() - timedelta(seconds=1)).where(
            Operation.id == op_id
        ).execute()
        assert operations.sweep()["reclaimed"] == 1
    op = dbs.engine.run(op_id)
    assert op.status == "done", op.last_error
    assert "already carries this service's mark" in dbs.log(op_id)
    databases, _ = server.names()
    assert databases == [name]
    server.login(dbs.details(service_id)).close()


def test_a_name_someone_else_has_is_refused_and_left_alone(dbs, server):
    tariff = dbs.tariff()
    order = dbs.api.order(dbs.client["id"], tariff["id"], {})
    name = f"{server.prefix}{order['service_id']}"
    if server.type_id == "mariadb":
        server.sql(f"CREATE DATABASE `{name}` COMMENT 'made by hand'")
        server.sql(f"CREATE TABLE `{name}`.theirs (n INT)")
    else:
        server.sql(f'CREATE ROLE "{name}"')
        server.sql(f"COMMENT ON ROLE \"{name}\" IS 'made by hand'")
    _, paid = dbs.api.pay(order)
    op = dbs.engine.run(paid["operation_id"])
    assert op.status == "manual"
    assert f"exists with the comment 'made by hand': the name {name} is not this service's" in (
        op.last_error
    )
    outcomes = [a["outcome"] for a in dbs.api.ok("get", f"/operations/{op.id}")["attempt_log"]]
    assert outcomes == ["permanent_error"]
    found = server.lookup(name)
    assert found["comment"] == "made by hand"
    if server.type_id == "mariadb":
        assert not found["user"]
        assert server.sql(f"SHOW TABLES FROM `{name}`") == [("theirs",)]
    else:
        assert not found["database"]
    # staff give up the setup and close the service: nothing of it is there, so the close
    # is done at once, and the name's owner keeps what is theirs
    dbs.api.ok("post", f"/operations/{op.id}/cancel", {})
    close = dbs.request(order["service_id"], "close")
    assert close.status == "done", close.last_error
    assert "not this service's, left alone; nothing to drop" in dbs.log(close.id)
    assert server.lookup(name)["comment"] == "made by hand"


def test_names_from_keywords_and_quotes_inject_nothing(dbs, server):
    """The client's prefix may be a keyword; quotes are refused before any SQL; the
    admin's password (quotes, backslash, semicolon) works in every test."""
    tariff = dbs.tariff()
    for keyword in ("select", "drop", "table"):
        service_id, op = dbs.open(tariff, prefix=keyword)
        assert op.status == "done", op.last_error
        assert dbs.details(service_id)["database"] == f"{server.prefix}{keyword}_{service_id}"
        server.login(dbs.details(service_id)).close()
    code, body = dbs.api.post(
        "/orders",
        {
            "client_id": dbs.client["id"],
            "tariff_id": tariff["id"],
            "params": {"prefix": "x`; DROP DATABASE mysql; --"},
        },
    )
    assert code == 422 and "params.prefix" in body["error"]["fields"], body
    code, body = dbs.api.post(
        "/modules",
        {"name": "quoted", "type": server.type_id, "config": server.config(name_prefix='a"b')},
    )
    assert code == 422 and "config.name_prefix" in body["error"]["fields"], body
    code, body = dbs.api.post(
        "/modules",
        {
            "name": "bad-pem",
            "type": server.type_id,
            "config": server.config(tls="verify", ca_bundle="-----BEGIN CERTIFICATE-----\nx"),
        },
    )
    assert code == 422 and body["error"]["fields"] == {
        "config.ca_bundle": "Not PEM certificates (-----BEGIN CERTIFICATE-----...)."
    }, body
    # a prefix that reached the module some other way (a changed order field) is ignored
    cls = modules.get_type(server.type_id)
    module = cls(cls.validate_config(server.config())[0])
    service = Service(id=77, remote_id=None)
    ctx = OperationContext(
        Operation(id=1, kind="open"), 1, service=service, params={"prefix": "x'; DROP USER root"}
    )
    assert module.name_for(ctx) == f"{server.prefix}77"


def test_grant_wildcards_do_not_reach_a_neighbouring_database(app, api, engine, mariadb):
    """In a GRANT, ``_`` matches any character: the grant on t..._1 must not cover t...x1."""
    dbs = Databases(app, api, engine, mariadb)
    service_id, _ = dbs.open(dbs.tariff())
    name = f"{mariadb.prefix}{service_id}"
    neighbour = name[:-2] + "x" + name[-1]
    assert len(neighbour) == len(name)
    mariadb.sql(f"CREATE DATABASE `{neighbour}`")
    try:
        mariadb.sql(f"CREATE TABLE `{neighbour}`.private (n INT)")
        said = refused(mariadb, {**dbs.details(service_id), "database": neighbour})
        assert said and "Access denied" in said
        grants = mariadb.sql(f"SHOW GRANTS FOR '{name}'@'%'")
        assert any(f"`{mariadb.prefix[:-1]}\\_{service_id}`" in g[0] for g in grants), grants
    finally:
        mariadb.sql(f"DROP DATABASE IF EXISTS `{neighbour}`")


def test_the_tariffs_connection_limit_and_a_change_of_tariff(dbs, server):
    small, big = dbs.tariff(connection_limit=2), dbs.tariff(connection_limit=5)
    service_id, op = dbs.open(small)
    assert op.status == "done", op.last_error
    details = dbs.details(service_id)
    assert server.lookup(details["database"])["connection_limit"] == 2
    held = [server.login(details), server.login(details)]
    said = refused(server, details)
    assert said and (
        "max_user_connections" in said
        if server.type_id == "mariadb"
        else "too many connections for role" in said
    ), said
    op = dbs.request(service_id, "change_tariff", tariff_id=big["id"])
    assert op.status == "done", op.last_error
    assert server.lookup(details["database"])["connection_limit"] == 5
    held.append(server.login(details))  # a third one now
    for conn in held:
        conn.close()
    service = dbs.api.ok("get", f"/services/{service_id}")
    assert service["tariff_id"] == big["id"]
    assert service["module_data"]["connection_limit"] == 5


def test_ensure_item_says_what_the_admin_lacks(app, api, engine, server):
    if server.type_id == "mariadb":
        user = server.make_admin(
            grants=(
                f"ALL PRIVILEGES ON `{server.prefix[:-1]}\\_%%`.* TO {{}} WITH GRANT OPTION",
                "CREATE USER ON *.* TO {}",
            ),
            user=f"{server.admin_user}_weak",
        )
        lacks = ["PROCESS", "CONNECTION ADMIN or SUPER"]
    else:
        user = server.make_admin(rights="CREATEDB", user=f"{server.admin_user}_weak")
        lacks = ["CREATEROLE"]
    code, body = api.post(
        "/modules",
        {
            "name": "weak",
            "type": server.type_id,
            "config": server.config(admin_user=user),
            "test_connection": True,
        },
    )
    assert code == 422, body
    message = body["error"]["fields"]["config.admin_user"]
    assert f"the admin user '{user}' lacks" in message
    for right in lacks:
        assert right in message, message
    dbs = Databases(app, api, engine, server, test_connection=False, admin_user=user)
    tariff = dbs.tariff(expect="manual")
    (item,) = api.ok("get", f"/tariffs/{tariff['id']}")["items"]
    assert item["status"] == "failed" and "cannot host databases" in item["error"]
    for right in lacks:
        assert right in item["error"], item["error"]


def test_ensure_item_refuses_a_limit_above_the_servers(dbs, server):
    tariff = dbs.tariff(connection_limit=90000, expect="manual")
    (item,) = dbs.api.ok("get", f"/tariffs/{tariff['id']}")["items"]
    assert "is more than the server allows in all (max_connections = " in item["error"]


def test_ensure_item_makes_and_drops_a_trial_database(dbs, server):
    dbs.tariff(connection_limit=4)
    with dbs.app.app_context(), database.connection_context():
        ensure = Operation.get(Operation.kind == "ensure_item")
    log = dbs.log(ensure.id)
    trial = f"{server.prefix}trial_{ensure.id}_check"
    quote = "`" if server.type_id == "mariadb" else '"'
    assert f"CREATE DATABASE {quote}{trial}{quote}" in log
    assert "were created with this tariff's limits, locked and dropped again" in log
    assert server.names() == ([], [])  # nothing left behind


def test_check_config_talks_to_the_server(api, server):
    def check(**config):
        module = api.ok(
            "post",
            "/modules",
            {
                "name": uuid.uuid4().hex[:8],
                "type": server.type_id,
                "config": server.config(**config),
            },
            status=201,
        )
        return api.ok("post", f"/modules/{module['id']}/check")

    good = check()
    label = "MariaDB 10." if server.type_id == "mariadb" else "PostgreSQL 1"
    assert good["ok"] is True and f"works: {label}" in good["message"], good
    assert (
        f"{server.admin_user} created, locked and dropped a trial database and user"
        in good["message"]
    )
    wrong = check(admin_password="not-the-password")
    assert wrong["ok"] is False and list(wrong["fields"]) == ["config.admin_password"], wrong
    down = check(port=free_port(), timeout=1)
    assert down["ok"] is False and list(down["fields"]) == ["config.host"], down
    assert "Connection refused" in down["message"] or "refused" in down["message"].lower()


def test_tls_settings(dbs, server):
    if server.type_id == "mariadb":
        # this machine's MariaDB has no TLS: "required" says so, in the server's words
        code, body = dbs.api.post(
            "/modules",
            {
                "name": "tls",
                "type": "mariadb",
                "config": server.config(tls="require"),
                "test_connection": True,
            },
        )
        assert code == 422, body
        assert (
            "SSL is required but the server doesn't support it"
            in (body["error"]["fields"]["config.tls"])
        )
        return
    cluster = server.cluster
    for config, ok, field in (
        ({"tls": "require"}, True, None),
        ({"tls": "verify", "ca_bundle": cluster.ca_pem}, True, None),
        ({"tls": "verify"}, False, "tls"),  # the system's roots do not know the test CA
    ):
        code, body = dbs.api.post(
            "/modules",
            {
                "name": uuid.uuid4().hex[:8],
                "type": "postgresql",
                "config": server.config(**config),
                "test_connection": True,
            },
        )
        assert (code == 201) is ok, body
        if not ok:
            assert field in {k.split(".")[1] for k in body["error"]["fields"]}, body
            assert "certificate verify failed" in str(body["error"]["fields"]), body
    verified = Databases(
        dbs.app, dbs.api, dbs.engine, server, tls="verify", ca_bundle=cluster.ca_pem
    )
    service_id, op = verified.open(verified.tariff())
    assert op.status == "done", op.last_error
    server.login(verified.details(service_id)).close()


def test_a_lock_held_by_someone_else_is_temporary_then_it_completes(app, api, engine, server):
    dbs = Databases(app, api, engine, server, timeout=1)
    service_id, _ = dbs.open(dbs.tariff())
    details = dbs.details(service_id)
    name = details["database"]
    if server.type_id == "mariadb":
        conn = server.login(details)
        with conn.cursor() as cursor:
            cursor.execute("CREATE TABLE busy (n INT)")
        conn.close()
        holder = server.connect()
        with holder.cursor() as cursor:
            cursor.execute(f"LOCK TABLES `{name}`.busy WRITE")
        kind = "close"
    else:
        holder = server.connect()
        holder.autocommit = False
        with holder.cursor() as cursor:
            cursor.execute(f'ALTER ROLE "{name}" CONNECTION LIMIT 7')
        kind = "suspend"
    try:
        op = api.ok("post", f"/services/{service_id}/{kind}", {}, status=202)
        with app.app_context(), database.connection_context():
            operations.run(op["id"])
            attempt = Attempt.get(Attempt.operation == op["id"])
            status = Operation.get_by_id(op["id"]).status
    finally:
        if server.type_id == "mariadb":
            with holder.cursor() as cursor:
                cursor.execute("UNLOCK TABLES")
        else:
            holder.rollback()
        holder.close()
    assert attempt.outcome == "temporary_error", attempt.error
    assert status == "retry_wait"
    said = "Lock wait timeout exceeded" if server.type_id == "mariadb" else "lock timeout"
    assert said in attempt.error, attempt.error
    assert engine.run(op["id"]).status == "done"


def test_mariadb_with_the_narrowest_admin_the_readme_gives(app, api, engine, mariadb):
    """The README's least-privilege admin: global CREATE USER, PROCESS and CONNECTION
    ADMIN, everything on the prefix's databases with GRANT OPTION, reading users."""
    pattern = mariadb.prefix[:-1] + "\\_%%"
    user = mariadb.make_admin(
        grants=(
            "CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO {}",
            f"ALL PRIVILEGES ON `{pattern}`.* TO {{}} WITH GRANT OPTION",
            "SELECT ON mysql.global_priv TO {}",
        ),
        user=f"{mariadb.admin_user}_least",
    )
    dbs = Databases(app, api, engine, mariadb, admin_user=user)  # Test connection passes
    service_id, op = dbs.open(dbs.tariff(connection_limit=2))
    assert op.status == "done", op.last_error
    details = dbs.details(service_id)
    held = mariadb.login(details)
    for kind in ("suspend", "resume", "close"):
        op = dbs.request(service_id, kind)
        assert op.status == "done", (kind, op.last_error)
    with pytest.raises(DRIVER_ERRORS), held.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert mariadb.names() == ([], [])


def test_a_trial_that_fails_half_way_leaves_nothing_and_test_connection_says_why(
    app, api, engine, mariadb
):
    """An admin without GRANT OPTION can create the trial database and user but not
    grant: Test connection says so on admin_user, and the failed item check drops what
    its trial made."""
    pattern = mariadb.prefix[:-1] + "\\_%%"
    user = mariadb.make_admin(
        grants=(
            "CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO {}",
            f"ALL PRIVILEGES ON `{pattern}`.* TO {{}}",  # no GRANT OPTION
            "SELECT ON mysql.global_priv TO {}",
        ),
        user=f"{mariadb.admin_user}_nogrant",
    )
    code, body = api.post(
        "/modules",
        {
            "name": "no-grant",
            "type": "mariadb",
            "config": mariadb.config(admin_user=user),
            "test_connection": True,
        },
    )
    assert code == 422, body
    message = body["error"]["fields"]["config.admin_user"]
    assert message.startswith("connected, but MariaDB refused GRANT ALL PRIVILEGES"), message
    assert "Access denied for user" in message
    assert mariadb.names() == ([], [])
    dbs = Databases(app, api, engine, mariadb, test_connection=False, admin_user=user)
    tariff = dbs.tariff(expect="manual")
    (item,) = api.ok("get", f"/tariffs/{tariff['id']}")["items"]
    assert item["status"] == "failed" and "refused GRANT ALL PRIVILEGES" in item["error"]
    assert mariadb.names() == ([], [])  # the trial's database and user are gone
