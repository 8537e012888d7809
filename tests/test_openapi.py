"""``/api/v1/openapi.json``: complete, valid OpenAPI 3.1, and true to real responses.

It describes the API (``/api/v1``) and the tasks proxy's peer API (``/proxy/v1``)."""

import re

import pytest

from app import scheduler
from app.db import database
from tests.support import Api, wait_for

PUBLIC = {"api.health", "api.openapi", "api.payment_webhook", "api.operation_callback"}
SIGNED = {"api.payment_webhook", "api.operation_callback"}
PEER_PASSWORD = "peer-password-1"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def spec(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def _openapi_path(rule):
    """The OpenAPI paths of a werkzeug rule string (one per value of an ``any``)."""
    variable = re.compile(r"<(?:(\w+)(?:\(([^)]*)\))?:)?(\w+)>")
    anys = [m for m in variable.finditer(rule) if m.group(1) == "any"]
    if not anys:
        return [variable.sub(r"{\3}", rule)]
    m = anys[0]
    values = [v.strip().strip("'\"") for v in m.group(2).split(",")]
    return [variable.sub(r"{\3}", rule[: m.start()] + v + rule[m.end() :]) for v in values]


def _api_rules(app):
    """The documented routes: the API's and the tasks proxy server side's."""
    return [r for r in app.url_map.iter_rules() if r.endpoint.startswith(("api.", "proxy."))]


def _is_peer(endpoint):
    return endpoint.startswith("proxy.")


def _operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def _resolve(spec, schema):
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def _required(spec, name_or_schema):
    """Required property names of a schema (following ``$ref``, ``allOf`` and ``oneOf``)."""
    if isinstance(name_or_schema, str):
        name_or_schema = {"$ref": f"#/components/schemas/{name_or_schema}"}
    schema = _resolve(spec, name_or_schema)
    required = set(schema.get("required", ()))
    for part in schema.get("allOf", ()):
        required |= _required(spec, part)
    variants = [_required(spec, part) for part in schema.get("oneOf", ())]
    if variants:
        required |= set.intersection(*variants)
    return required


# --- (a) every route, and only real routes --------------------------------------------------


def test_every_api_and_proxy_route_is_in_the_spec(app, spec):
    expected = set()
    for rule in _api_rules(app):
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            for path in _openapi_path(rule.rule):
                expected.add((path, method.lower()))
    documented = {(path, method) for path, method, _ in _operations(spec)}
    assert len(expected) >= 30
    assert {p for p, _ in expected if p.startswith("/proxy/v1/")} == {
        "/proxy/v1/departments",
        "/proxy/v1/tasks",
        "/proxy/v1/tasks/{sender_task_id}/events",
        "/proxy/v1/events",
    }
    assert expected - documented == set(), "routes missing from the spec"
    assert documented - expected == set(), "spec paths that do not exist"


def test_every_operation_is_written_by_hand(app, spec):
    ids = []
    for path, method, operation in _operations(spec):
        where = f"{method.upper()} {path}"
        assert not operation.get("x-undocumented"), f"{where} has no entry in OPERATIONS"
        assert operation.get("summary"), where
        assert operation.get("tags"), where
        ids.append(operation["operationId"])
        codes = set(operation["responses"])
        assert any(code.startswith("2") for code in codes), where
        names = {p["name"] for p in operation.get("parameters", []) if "name" in p}
        for variable in re.findall(r"{(\w+)}", path):
            assert variable in names, f"{where}: path parameter {variable} not declared"
        if operation.get("requestBody"):
            assert "400" in codes, f"{where} takes JSON but does not document 400"
    assert len(ids) == len(set(ids)), "operationId must be unique"


def test_summaries_come_from_the_views(app, spec):
    for rule in _api_rules(app):
        doc = (app.view_functions[rule.endpoint].__doc__ or "").strip()
        assert doc, f"{rule.endpoint} has no docstring"
        for path in _openapi_path(rule.rule):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                operation = spec["paths"][path][method.lower()]
                assert operation["description"] == doc


def test_security_bearer_everywhere_but_public_and_signed(app, spec):
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert "provisor tokens create --email" in scheme["description"]
    assert spec["security"] == [{"bearerAuth": []}]
    endpoints = {}
    for rule in _api_rules(app):
        for path in _openapi_path(rule.rule):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                endpoints[(path, method.lower())] = rule.endpoint
    for path, method, operation in _operations(spec):
        endpoint = endpoints[(path, method)]
        if endpoint in PUBLIC:
            assert operation.get("security") == [], f"{endpoint} must not need a bearer token"
        elif _is_peer(endpoint):
            assert operation["security"] == [{"basicAuth": []}], endpoint
            assert "401" in operation["responses"], endpoint
            assert operation["x-provisor-role"] == "peer"
        else:
            assert "security" not in operation, endpoint
            assert {"401", "403"} <= set(operation["responses"]), endpoint
            assert operation["x-provisor-role"] in ("staff", "admin", "reseller")
        if endpoint in SIGNED:
            params = [
                spec["components"]["parameters"][p["$ref"].rsplit("/", 1)[-1]] if "$ref" in p else p
                for p in operation["parameters"]
            ]
            header = [p for p in params if p["name"] == "X-Provisor-Signature"]
            assert header and header[0]["in"] == "header" and header[0]["required"]
            assert "HMAC-SHA256" in header[0]["description"]
            assert "401" in operation["responses"]


def test_error_responses_use_the_error_schema(spec):
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert set(error["properties"]["error"]["required"]) == {"code", "message", "fields"}
    for code in ("400", "401", "403", "404", "409", "422"):
        used = [op["responses"][code] for _, _, op in _operations(spec) if code in op["responses"]]
        assert used, f"no operation documents {code}"
        for response in used:
            target = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
            schema = target["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}


def test_documented_roles_match_the_api(app, client, api, spec):
    """``x-provisor-role``: no token → 401; a staff token on an admin or reseller route →
    403, a reseller's token on any other route → 403; the peer API takes no bearer token
    at all (401), only a server side's HTTP Basic."""
    with app.app_context(), database.connection_context():
        from app.services import accounts

        accounts.create_user(
            {"email": "staff@example.com", "name": "Staff", "password": "staff-password"}
        )
        staff = Api(client, accounts.create_token("staff@example.com"))
        from app.services import resellers

        shop = accounts.create_client({"name": "Shop", "email": "shop@example.com"})
        reseller = Api(client, resellers.enable(shop.id)[1])
    for path, method, operation in _operations(spec):
        role = operation["x-provisor-role"]
        url = re.sub(r"{\w+}", "1", path)
        if role == "none":
            continue
        response = getattr(client, method)(url, json={})
        assert response.status_code == 401, (method, url)
        assert response.get_json()["error"]["code"] == "unauthorized"
        if role == "peer":
            response = getattr(client, method)(url, json={}, headers=staff.headers)
            assert response.status_code == 401, (method, url)
            assert response.headers["WWW-Authenticate"].startswith("Basic")
            continue
        status, data = getattr(staff, method)(url.removeprefix("/api/v1"), body={})
        if role in ("admin", "reseller"):
            assert status == 403, (method, url, status, data)
        else:
            assert status not in (401, 403), (method, url, status, data)
        status, data = getattr(reseller, method)(url.removeprefix("/api/v1"), body={})
        if role == "reseller":
            assert status not in (401, 403), (method, url, status, data)
        else:
            assert status == 403, (method, url, status, data)


def test_list_parameters_are_documented(spec):
    def names(path):
        return {
            p.get("name") or p["$ref"].rsplit("/", 1)[-1]
            for p in spec["paths"][path]["get"]["parameters"]
        }

    assert {"status", "kind", "module_id", "service_id", "limit", "offset"} <= names(
        "/api/v1/operations"
    )
    assert {"department_id", "status", "assignee_id", "limit", "offset"} <= names("/api/v1/tasks")
    assert {"status", "client_id", "q", "limit", "offset"} <= names("/api/v1/services")
    assert {"q", "limit", "offset"} <= names("/api/v1/clients")
    assert {"status", "service_id", "limit", "offset"} <= names("/api/v1/emails")
    status = next(
        p
        for p in spec["paths"]["/api/v1/operations"]["get"]["parameters"]
        if p.get("name") == "status"
    )
    assert "waiting_callback" in status["schema"]["enum"]


def test_request_bodies_declare_required_fields(spec):
    def required(path, method="post"):
        schema = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        return _required(spec, schema["schema"])

    assert required("/api/v1/clients") == {"name", "email"}
    assert required("/api/v1/departments") == {"name"}
    assert required("/api/v1/staff") == {"email", "password"}
    assert required("/api/v1/modules") == {"name", "type"}
    assert required("/api/v1/tariffs") == {"name", "product_type", "price", "internal_name"}
    assert required("/api/v1/tariffs/{tariff_id}", "put") == {
        "name",
        "product_type",
        "price",
        "internal_name",
    }
    assert required("/api/v1/orders") == {"client_id", "tariff_id"}
    assert required("/api/v1/webhooks/payment") == {
        "payment_id",
        "order_id",
        "amount",
        "currency",
    }
    assert required("/api/v1/services/{service_id}/change_tariff") == {"tariff_id"}
    callback = spec["paths"]["/api/v1/operations/{operation_id}/callback"]["post"]
    assert callback["requestBody"]["required"] is True
    close = spec["paths"]["/api/v1/tasks/{task_id}/close"]["post"]["requestBody"]
    assert set(_resolve(spec, close["content"]["application/json"]["schema"])["properties"]) == {
        "fields",
        "comment",
    }


def test_module_bodies_follow_each_module_type(spec):
    import modules

    schemas = spec["components"]["schemas"]
    variants = [_resolve(spec, v) for v in schemas["ModuleInput"]["oneOf"]]
    types = {v["properties"]["type"]["const"] for v in variants}
    assert types == set(modules.types()) >= {"sandbox", "http"}
    assert schemas["HttpConfig"]["required"] == ["url", "secret"]
    assert schemas["SandboxConfig"]["properties"]["failure_rate"]["maximum"] == 1
    assert schemas["SandboxConfig"]["additionalProperties"] is False


def _request_validator(spec, path, method="post"):
    validators = pytest.importorskip("openapi_schema_validator")
    content = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
    schema = {**content["schema"], "components": spec["components"]}
    return validators.OAS31Validator(schema)


def test_request_schemas_accept_good_bodies_and_refuse_bad_ones(spec):
    good = {
        "/api/v1/clients": {"name": "Bob", "email": "bob@example.com"},
        "/api/v1/departments": {"name": "Support"},
        "/api/v1/staff": {"email": "s@example.com", "password": "long-password"},
        "/api/v1/modules": {"name": "m", "type": "sandbox", "config": {"failure_rate": 0.5}},
        "/api/v1/tariffs": {
            "name": "VPS",
            "product_type": "vps",
            "price": "9.99",
            "internal_name": "vps-s",
            "module_ids": [1],
        },
        "/api/v1/orders": {"client_id": 1, "tariff_id": 2, "params": {"domain": "x.test"}},
        "/api/v1/webhooks/payment": {
            "payment_id": "p-1",
            "order_id": 1,
            "amount": "9.99",
            "currency": "USD",
        },
    }
    bad = {
        "/api/v1/clients": {"name": "Bob", "email": "not-an-email"},
        "/api/v1/departments": {},
        "/api/v1/staff": {"email": "s@example.com", "password": "short"},
        "/api/v1/modules": {"name": "m", "type": "sandbox", "config": {"failure_rate": 7}},
        "/api/v1/tariffs": {"name": "VPS", "product_type": "vps", "price": "abc"},
        "/api/v1/orders": {"client_id": "x", "tariff_id": 2},
        "/api/v1/webhooks/payment": {"payment_id": "p-1", "order_id": 1},
    }
    for path, body in good.items():
        assert _request_validator(spec, path).is_valid(body), path
    for path, body in bad.items():
        assert not _request_validator(spec, path).is_valid(body), path
    http = {"name": "h", "type": "http", "config": {"url": "https://panel.test/", "secret": "s"}}
    assert _request_validator(spec, "/api/v1/modules").is_valid(http)
    assert not _request_validator(spec, "/api/v1/modules").is_valid({**http, "type": "sandbox"})


def test_http_module_protocol_is_described(spec):
    text = spec["info"]["description"]
    for words in (
        "X-Provisor-Signature",
        '"status": "done"',
        '"status": "pending"',
        "/api/v1/operations/<operation_id>/callback",
        "Idempotency-Key",
        "5xx",
        "4xx",
        "provisor tokens create",
    ):
        assert words in text, words
    request = spec["components"]["schemas"]["HttpModuleRequest"]
    assert {"operation", "operation_id", "service", "tariff", "client", "params"} <= set(
        request["required"]
    )
    assert "httpModuleOperation" in spec["webhooks"]


# --- (b) a valid OpenAPI 3.1 document ---------------------------------------------------------


def test_valid_openapi_3_1(spec):
    validator = pytest.importorskip("openapi_spec_validator")
    assert spec["openapi"].startswith("3.1.")
    validator.validate(spec)


def test_every_reference_resolves(spec):
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert refs
    for target in refs:
        assert target.startswith("#/"), target
        node = spec
        for part in target[2:].split("/"):
            assert part in node, f"unresolved {target}"
            node = node[part]


def test_structure(spec):
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["title"] and spec["info"]["version"]
    for name in (
        "Client",
        "Department",
        "Staff",
        "Module",
        "Tariff",
        "Item",
        "Order",
        "Service",
        "Operation",
        "Attempt",
        "Task",
        "Email",
        "Error",
        "OperationPage",
    ):
        assert name in spec["components"]["schemas"], name
    assert _required(spec, "OperationPage") == {"operations", "total", "limit", "offset"}
    for path, method, operation in _operations(spec):
        assert path.startswith(("/api/v1/", "/proxy/v1/"))
        for code, response in operation["responses"].items():
            assert re.fullmatch(r"[1-5]\d\d|[1-5]XX|default", code), (path, method, code)
            assert "$ref" in response or "description" in response


# --- (c) real responses have what the schemas declare ----------------------------------------


def _check(spec, name, data):
    """``data`` has exactly the schema's required properties, and validates when possible."""
    assert set(data) == _required(spec, name), name
    try:
        from openapi_schema_validator import OAS31Validator
    except ImportError:
        return
    schema = {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}
    OAS31Validator(schema).validate(data)


def test_real_responses_match_their_schemas(app, api, spec):
    department, module, tariff, client = api.catalog(
        "sandbox", config={"fail_first": 1, "permanent_failures": True}
    )
    _check(spec, "Department", department)
    _check(spec, "Module", module)
    _check(spec, "Tariff", tariff)
    _check(spec, "Client", client)
    tariff_again = api.ok("get", f"/tariffs/{tariff['id']}")
    _check(spec, "Tariff", tariff_again)
    _check(spec, "Item", tariff_again["items"][0])

    order = api.order(client["id"], tariff["id"])
    _check(spec, "Order", order)
    _check(spec, "Order", api.ok("get", f"/orders/{order['id']}"))
    status, paid = api.pay(order)
    assert status == 200, paid
    _check(spec, "PaymentResult", paid)

    # the first attempt fails permanently: a manual operation and a task
    operation = api.wait_operation(paid["operation_id"], statuses=("manual",))
    _check(spec, "OperationWithAttempts", operation)
    _check(spec, "Attempt", operation["attempt_log"][0])
    tasks = api.ok("get", "/tasks")
    _check(spec, "TaskPage", tasks)
    _check(spec, "Task", tasks["tasks"][0])

    restarted = api.ok("post", f"/operations/{operation['id']}/restart", status=202)
    _check(spec, "Operation", restarted)
    api.wait_operation(operation["id"], statuses=("done",))
    service = api.ok("get", f"/services/{order['service_id']}")
    _check(spec, "ServiceWithOperations", service)
    _check(spec, "ServicePage", api.ok("get", "/services"))
    emails = wait_for(lambda: api.ok("get", "/emails")["emails"], message="welcome email")
    _check(spec, "Email", emails[0])
    _check(spec, "EmailPage", api.ok("get", "/emails"))

    suspend = api.ok("post", f"/services/{service['id']}/suspend", status=202)
    _check(spec, "Operation", suspend)
    _check(spec, "ClientPage", api.ok("get", "/clients"))
    _check(spec, "TariffList", api.ok("get", "/tariffs"))
    _check(spec, "ModuleList", api.ok("get", "/modules"))
    _check(spec, "ModuleTypeList", api.ok("get", "/module-types"))
    _check(spec, "DepartmentList", api.ok("get", "/departments"))
    staff = api.ok("get", "/staff")
    _check(spec, "StaffList", staff)
    _check(spec, "Staff", staff["staff"][0])
    code, health = api.get("/health")  # no scheduler has run here: degraded, same schema
    assert (code, health["status"]) == (503, "degraded"), health
    _check(spec, "Health", health)
    scheduler.run_once(api.client.application)
    _check(spec, "Health", api.ok("get", "/health"))

    code, error = api.get("/tariffs/999999")
    assert code == 404
    _check(spec, "Error", error)


def test_operation_list_matches_its_schema(api, spec):
    _, _, tariff, client = api.catalog(
        "sandbox", config={"fail_first": 1, "permanent_failures": True}
    )
    status, paid = api.pay(api.order(client["id"], tariff["id"]))
    assert status == 200, paid
    api.wait_operation(paid["operation_id"], statuses=("manual",))
    listed = api.ok("get", "/operations?status=manual")
    _check(spec, "OperationPage", listed)
    _check(spec, "Operation", listed["operations"][0])
    _check(spec, "OperationPage", api.ok("get", "/operations"))


def test_paying_by_staff_matches_paid_order(api, spec):
    _, _, tariff, client = api.catalog("sandbox")
    order = api.order(client["id"], tariff["id"])
    paid = api.ok("post", f"/orders/{order['id']}/pay")
    _check(spec, "PaidOrder", paid)


def test_money_keeps_two_decimals_when_read_back(api, spec):
    """A price of 10 reads back as "10.00" everywhere, as the POST answered (schema pattern)."""
    _, module, _, client = api.catalog("sandbox")
    tariff = api.ok(
        "post",
        "/tariffs",
        {
            "name": "Round",
            "product_type": "vps",
            "price": "10",
            "internal_name": "round",
            "module_ids": [module["id"]],
        },
    )
    assert tariff["price"] == "10.00"
    assert api.ok("get", f"/tariffs/{tariff['id']}")["price"] == "10.00"
    order = api.order(client["id"], tariff["id"])
    assert order["amount"] == "10.00"
    assert api.ok("get", f"/orders/{order['id']}")["amount"] == "10.00"


# --- (d) the peer API (/proxy/v1): real answers and its inputs ---------------------------------


def _peer(app, api, login="reseller-1"):
    """A department and a server side for ``login``; the HTTP Basic header of that login."""
    import base64

    department = api.ok("post", "/departments", {"name": f"DC for {login}"})
    with app.app_context(), database.connection_context():
        from app.services import proxy

        proxy.create_server_side(
            {"login": login, "password": PEER_PASSWORD, "department_id": department["id"]}
        )
    token = base64.b64encode(f"{login}:{PEER_PASSWORD}".encode()).decode()
    return department, {"Authorization": f"Basic {token}"}


def test_real_peer_responses_match_their_schemas(app, client, api, spec):
    department, auth = _peer(app, api)
    listed = client.get("/proxy/v1/departments", headers=auth)
    assert listed.status_code == 200
    _check(spec, "PeerDepartmentList", listed.get_json())
    assert listed.get_json() == {
        "departments": [{"id": department["id"], "name": department["name"]}]
    }

    task = {
        "sender_task_id": 7,
        "department_id": department["id"],
        "title": "Set up service #1 manually",
        "description": "Service #1: VPS S (Virtual private server), client Alice.",
        "form": [{"name": "ip", "label": "IP address", "required": True}],
        "fields": {"hostname": "vps1.example"},
    }
    assert _request_validator(spec, "/proxy/v1/tasks").is_valid(task)
    first = client.post("/proxy/v1/tasks", json=task, headers=auth)
    assert first.status_code == 201, first.get_json()
    _check(spec, "PeerTaskReceipt", first.get_json())
    again = client.post("/proxy/v1/tasks", json=task, headers=auth)
    assert again.status_code == 200 and again.get_json()["created"] is False
    assert again.get_json()["task_id"] == first.get_json()["task_id"]

    # what people do here comes back as events
    task_id = first.get_json()["task_id"]
    api.ok("post", f"/tasks/{task_id}/comment", {"text": "on it"})
    page = client.get("/proxy/v1/events?after=0", headers=auth)
    assert page.status_code == 200
    _check(spec, "PeerEventPage", page.get_json())
    event = page.get_json()["events"][0]
    _check(spec, "PeerEvent", event)
    assert (event["kind"], event["text"], event["sender_task_id"]) == ("comment", "on it", 7)
    assert event["created_at"].endswith("Z")
    after = client.get(f"/proxy/v1/events?after={page.get_json()['next']}", headers=auth)
    assert after.get_json() == {"events": [], "next": page.get_json()["next"]}

    change = {"event_id": "e-1", "kind": "comment", "actor": "bob", "text": "hello", "fields": {}}
    assert _request_validator(spec, "/proxy/v1/tasks/{sender_task_id}/events").is_valid(change)
    applied = client.post("/proxy/v1/tasks/7/events", json=change, headers=auth)
    assert applied.status_code == 200
    _check(spec, "PeerEventReceipt", applied.get_json())
    assert applied.get_json()["applied"] is True
    repeated = client.post("/proxy/v1/tasks/7/events", json=change, headers=auth)
    assert repeated.get_json()["applied"] is False

    for response in (
        client.get("/proxy/v1/departments"),
        client.post("/proxy/v1/tasks/999/events", json=change, headers=auth),
        client.get("/proxy/v1/events?after=abc", headers=auth),
    ):
        assert response.status_code in (401, 404, 422)
        _check(spec, "Error", response.get_json())


@pytest.mark.parametrize(
    "path, body, fields",
    [
        (
            "/tasks",
            {"department_id": 0, "form": "ip", "fields": [1], "description": 5},
            {
                "sender_task_id": "Required: the sender's task id.",
                "department_id": "Not a department this account may send to.",
                "title": "This field is required.",
                "form": "Must be a list of fields with names.",
                "fields": "Must be an object of detail fields.",
                "description": "Must be text.",
            },
        ),
        (
            "/tasks",
            {"sender_task_id": 1, "department_id": 987654, "title": "x" * 251},
            {
                "department_id": "Not a department this account may send to.",
                "title": "At most 250 characters.",
            },
        ),
        (
            "/tasks/7/events",
            {"kind": "explode", "text": 5, "fields": "ip=1"},
            {
                "event_id": "Required: a unique id of this event.",
                "kind": "One of: comment, fields, closed, cancelled.",
                "text": "Must be text.",
                "fields": "Must be an object of detail fields.",
            },
        ),
    ],
)
def test_peer_inputs_are_refused_with_their_messages(app, client, api, spec, path, body, fields):
    _, auth = _peer(app, api)
    response = client.post(f"/proxy/v1{path}", json=body, headers=auth)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert (error["code"], error["fields"]) == ("validation_error", fields)
    schema_path = (
        "/proxy/v1/tasks/{sender_task_id}/events" if "events" in path else "/proxy/v1/tasks"
    )
    assert not _request_validator(spec, schema_path).is_valid(body)


def test_a_wrong_method_on_the_peer_api_gets_json_405(app, client, api):
    _, auth = _peer(app, api)
    response = client.post("/proxy/v1/departments", json={}, headers=auth)
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]
    missing = client.get("/proxy/v1/nowhere", headers=auth)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


# --- (e) the document follows the declarations --------------------------------------------------


def test_enums_come_from_the_models(spec):
    from app.models import Attempt, Item, Operation, Service, Task

    schemas = spec["components"]["schemas"]
    assert schemas["Operation"]["properties"]["kind"]["enum"] == list(Operation.KINDS)
    assert schemas["Operation"]["properties"]["status"]["enum"] == list(Operation.STATUSES)
    assert schemas["Service"]["properties"]["status"]["enum"] == list(Service.STATUSES)
    assert schemas["Task"]["properties"]["status"]["enum"] == list(Task.STATUSES)
    assert schemas["Item"]["properties"]["status"]["enum"] == list(Item.STATUSES)
    outcome = schemas["Attempt"]["properties"]["outcome"]["anyOf"][0]
    assert outcome["enum"] == list(Attempt.OUTCOMES)


def test_a_new_module_type_and_config_kind_are_described(app, monkeypatch):
    """A type registered later (with text and choice settings) gets its config and module
    bodies, and the document stays valid. (A kind ConfigField does not know is refused
    when the type is declared.)"""
    import modules
    from modules.base import ConfigField, ModuleType

    class DnsModule(ModuleType):
        id = "power-dns"
        name = "PowerDNS"
        description = "Zones on a PowerDNS server"
        config_fields = [
            ConfigField("api_url", "API URL", kind="url", required=True),
            ConfigField("zone_template", "Zone template", kind="text", max_length=5000),
            ConfigField("kind", "Zone kind", kind="choice", options=["Native", "Master"]),
            ConfigField("ttl", "TTL", kind="int", default=3600, minimum=60),
        ]
        operations = {"open", "close"}

    monkeypatch.setattr(modules, "_registry", {**modules.types(), "power-dns": DnsModule})
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    pytest.importorskip("openapi_spec_validator").validate(spec)
    schemas = spec["components"]["schemas"]
    config = schemas["PowerDnsConfig"]
    assert config["required"] == ["api_url"]
    assert config["properties"]["ttl"]["minimum"] == 60
    assert "zone_template" in config["properties"]
    assert config["properties"]["zone_template"]["maxLength"] == 5000
    assert set(config["properties"]["kind"]["enum"]) >= {"Native", "Master"}
    with pytest.raises(ValueError, match="unknown kind"):
        ConfigField("zone", "Zone", kind="zone-template")
    variants = [v["$ref"].rsplit("/", 1)[-1] for v in schemas["ModuleInput"]["oneOf"]]
    assert "PowerDnsModuleInput" in variants
    body = {"name": "dns", "type": "power-dns", "config": {"api_url": "https://dns.test/"}}
    assert _request_validator(spec, "/api/v1/modules").is_valid(body)
