"""The JSON API (``/api/v1``): thin handlers over ``app/services``.

Every error is ``{"error": {"code", "message", "fields"}}`` with a 4xx status.
"""

import functools
import json

from flask import Blueprint, current_app, jsonify, request

from app import signing
from app.auth import api_user, csrf
from app.guards import nul_fields
from app.models import Email, EventDelivery, Operation, Service, Task, User, parse_id
from app.objects import outputs as out
from app.objects.inputs import TaskAssignInput
from app.services import (
    accounts,
    catalog,
    clients,
    events,
    imports,
    monitoring,
    operations,
    orders,
    provisioning,
    resellers,
    tasks,
)
from app.services.errors import (
    PermissionDenied,
    ServiceError,
    Unauthorized,
    ValidationError,
)
from app.states import REQUESTABLE
from app.web.errors import DATABASE_RETRY_AFTER, json_error, register_json_errors

api_bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(api_bp)
register_json_errors(api_bp)

MAX_LIMIT = 1000
error_response = json_error


def json_body():
    """The request's JSON object, or a 400 that says why not."""
    data = request.get_json(silent=True)
    if data is None:
        if not request.get_data():
            return {}
        raise ServiceError(
            "the body must be JSON (Content-Type: application/json)", code="invalid_json"
        )
    if not isinstance(data, dict):
        raise ServiceError("the body must be a JSON object", code="invalid_json")
    bad = nul_fields(data)
    if bad:
        raise ValidationError(bad)
    return data


def requires(role):
    """Bearer-token auth: ``staff`` (staff and admins), ``admin``, or ``reseller`` (a
    client paying on account, :mod:`app.services.resellers`: its token reaches these
    routes only; staff and admins are refused there, they have no services of their
    own)."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            user = api_user()
            if user is None:
                raise Unauthorized("a valid bearer token is required (provisor tokens create)")
            if role == "admin" and not user.is_admin:
                raise PermissionDenied("admins only")
            if role == "staff" and not user.is_staff:
                raise PermissionDenied("staff only")
            if role == "reseller":
                resellers.reseller_of(user)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def page(query):
    """Apply ``limit``/``offset`` from the query string; return rows and paging facts
    (``{"total", "limit", "offset"}``, what a ``...Page`` object holds besides its rows)."""
    errors = {}
    values = {}
    for name, default, top in (("limit", 100, MAX_LIMIT), ("offset", 0, 10**9)):
        raw = request.args.get(name, default)
        try:
            values[name] = int(raw)
            if not 0 <= values[name] <= top:
                raise ValueError
        except (TypeError, ValueError):
            errors[name] = f"Must be a whole number from 0 to {top}."
    if errors:
        raise ValidationError(errors)
    total = query.count()
    rows = list(query.limit(values["limit"]).offset(values["offset"]))
    return rows, {"total": total, "limit": values["limit"], "offset": values["offset"]}


def int_arg(name):
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    number = parse_id(raw)
    if number is None:
        raise ValidationError({name: "Must be an id (a whole number from 1)."})
    return number


def choice_arg(name, allowed):
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    if raw not in allowed:
        raise ValidationError({name: "One of: " + ", ".join(allowed)})
    return raw


# --- health and contract ----------------------------------------------------------------


@api_bp.get("/health")
def health():
    """Is the system working: the database, the broker, the scheduler's last sweep and the
    operations no worker took (``?scope=web``: only what this process needs to serve)."""
    scope = choice_arg("scope", ("system", "web")) or "system"
    report = monitoring.health(current_app.config, scope)
    response = jsonify(out.Health.of(report))
    response.status_code = 200 if report["status"] == "ok" else 503
    response.headers["Cache-Control"] = "no-store"
    if report["status"] != "ok":
        response.headers["Retry-After"] = str(health_retry_after(report, current_app.config))
    return response


def health_retry_after(report, config):
    """Seconds until a degraded health check is worth asking again (``Retry-After``): the
    database or the broker may be back within a few seconds; what the scheduler's sweep
    reports (its age, overdue operations) changes at the next sweep at the earliest."""
    if report["database"] != "ok" or report["redis"] not in (None, "ok"):
        return DATABASE_RETRY_AFTER
    return config["SWEEP_INTERVAL"]


@api_bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 description of this API."""
    from app.api.openapi import spec

    return jsonify(spec())


# --- catalog (admin API) ----------------------------------------------------------------


@api_bp.get("/tariffs")
@requires("staff")
def list_tariffs():
    """Tariff plans with their modules and whether they can be ordered."""
    include = request.args.get("archived") in ("1", "true")
    return jsonify({"tariffs": [_tariff(t) for t in catalog.tariffs(include_archived=include)]})


def _tariff(t):
    return out.Tariff.of(
        t,
        module_ids=[m.id for m in catalog.tariff_modules(t)],
        orderable=catalog.is_orderable(t),
        items=catalog.items_for(t),
        order_fields=catalog.order_fields_for(t),
    )


@api_bp.post("/tariffs")
@requires("admin")
def create_tariff():
    """Create a tariff plan; linking enabled modules queues their ensure_item operations."""
    return jsonify(_tariff(catalog.create_tariff(json_body()))), 201


@api_bp.get("/tariffs/<int:tariff_id>")
@requires("staff")
def get_tariff(tariff_id):
    """One tariff plan."""
    return jsonify(_tariff(catalog.get_tariff(tariff_id)))


@api_bp.put("/tariffs/<int:tariff_id>")
@requires("admin")
def update_tariff(tariff_id):
    """Change a tariff plan (all fields, like POST)."""
    return jsonify(_tariff(catalog.update_tariff(tariff_id, json_body())))


def _module(m):
    return out.Module.of(m)


@api_bp.get("/modules")
@requires("admin")
def list_modules():
    """Processing modules (secrets masked)."""
    return jsonify({"modules": [_module(m) for m in catalog.processing_modules()]})


@api_bp.post("/modules")
@requires("admin")
def create_module():
    """Configure a processing module; its config is validated against its type's schema."""
    return jsonify(_module(catalog.create_module(json_body()))), 201


@api_bp.get("/modules/<int:module_id>")
@requires("admin")
def get_module(module_id):
    """One processing module."""
    return jsonify(_module(catalog.get_module(module_id)))


@api_bp.put("/modules/<int:module_id>")
@requires("admin")
def update_module(module_id):
    """Change a processing module (a blank secret keeps the stored one)."""
    return jsonify(_module(catalog.update_module(module_id, json_body())))


@api_bp.post("/modules/<int:module_id>/check")
@requires("admin")
def check_module(module_id):
    """Test connection: the module type talks to its server with the stored settings."""
    return jsonify(catalog.check_module(module_id))


@api_bp.get("/modules/<int:module_id>/accounts")
@requires("staff")
def list_module_accounts(module_id):
    """The accounts on the module's panel, to import one as a service (module types that
    can list them); each says the live service already bound to it."""
    return jsonify(out.RemoteAccountList.of({"accounts": imports.accounts(module_id)}))


@api_bp.get("/module-types")
@requires("admin")
def list_module_types():
    """Known module types with their configuration schema."""
    types = catalog.module_types().values()
    return jsonify({"module_types": [out.ModuleType.of(cls) for cls in types]})


@api_bp.get("/departments")
@requires("staff")
def list_departments():
    """Departments."""
    return jsonify({"departments": [out.Department.of(d) for d in catalog.departments()]})


@api_bp.post("/departments")
@requires("admin")
def create_department():
    """Create a department."""
    return jsonify(out.Department.of(catalog.create_department(json_body()))), 201


@api_bp.get("/staff")
@requires("admin")
def list_staff():
    """Staff members and admins."""
    return jsonify({"staff": [_staff(u) for u in accounts.staff()]})


def _staff(user):
    return out.Staff.of(user, department_ids=accounts.department_ids_of(user))


@api_bp.post("/staff")
@requires("admin")
def create_staff():
    """Create a staff member (``role: admin`` makes an admin)."""
    data = json_body()
    user = accounts.create_user(data, role=data.get("role", "staff"))
    return jsonify(_staff(user)), 201


@api_bp.get("/staff/<int:user_id>")
@requires("admin")
def get_staff(user_id):
    """One staff member or admin."""
    user = accounts.get_user(user_id)
    return jsonify(_staff(user))


@api_bp.put("/staff/<int:user_id>")
@requires("admin")
def update_staff(user_id):
    """Change a staff member: name, role, departments, active, password."""
    user = accounts.update_user(user_id, json_body(), actor=api_user())
    return jsonify(_staff(user))


@api_bp.put("/departments/<int:department_id>")
@requires("admin")
def update_department(department_id):
    """Rename a department or change its notification email."""
    return jsonify(out.Department.of(catalog.update_department(department_id, json_body())))


@api_bp.get("/clients")
@requires("staff")
def list_clients():
    """Clients (``q`` searches name and email)."""
    rows, paging = page(accounts.clients(request.args.get("q")))
    return jsonify(out.ClientPage.of({"clients": rows, **paging}))


@api_bp.post("/clients")
@requires("admin")
def create_client():
    """Create a client; with ``password`` the client can log in to the client area."""
    data = json_body()
    client = accounts.create_client(data, with_login=bool(data.get("password")))
    return jsonify(out.Client.of(client)), 201


@api_bp.get("/clients/<int:client_id>")
@requires("staff")
def get_client(client_id):
    """One client with their contact details."""
    return jsonify(out.Client.of(accounts.get_client(client_id)))


@api_bp.put("/clients/<int:client_id>")
@requires("staff")
def update_client(client_id):
    """Change a client: name, email, language (``en``, ``ru``: the client area and the
    client's emails) or contact details; what is not given stays as it is."""
    client = accounts.update_client(client_id, json_body(), actor=api_user().email)
    return jsonify(out.Client.of(client))


@api_bp.get("/clients/<int:client_id>/notes")
@requires("staff")
def list_client_notes(client_id):
    """The staff notes on a client, newest first."""
    return jsonify(out.ClientNoteList.of({"notes": clients.notes(client_id)}))


@api_bp.post("/clients/<int:client_id>/notes")
@requires("staff")
def add_client_note(client_id):
    """Add a staff note to a client's record (signed with the token's user)."""
    note = clients.add_note(client_id, json_body(), actor=api_user().email)
    return jsonify(out.ClientNote.of(note)), 201


# --- orders and payments ----------------------------------------------------------------


@api_bp.post("/orders")
@requires("staff")
def create_order():
    """Order a tariff for a client: an unpaid order and its service."""
    return jsonify(out.Order.of(orders.create(json_body()))), 201


@api_bp.get("/orders/<int:order_id>")
@requires("staff")
def get_order(order_id):
    """One order."""
    return jsonify(out.Order.of(orders.get(order_id)))


@api_bp.post("/orders/<int:order_id>/pay")
@requires("staff")
def pay_order(order_id):
    """Staff marks an order paid (no payment provider involved)."""
    order, op = orders.mark_paid(order_id, by=api_user().email)
    return jsonify(out.PaidOrder.of(order, operation_id=op.id)), 200


@api_bp.post("/webhooks/payment")
def payment_webhook():
    """A payment provider reports a payment; signed, idempotent on ``payment_id``."""
    raw = request.get_data()
    reason = signing.verify(
        current_app.config["PAYMENT_WEBHOOK_SECRET"],
        raw,
        request.headers.get(signing.HEADER),
        tolerance=current_app.config["PAYMENT_WEBHOOK_TOLERANCE"],
        direction="payment",
        path=request.path,
    )
    if reason:
        return error_response(401, "bad_signature", reason)
    result, created = orders.receive_payment(json_body())
    return jsonify(out.PaymentResult.of(result, replayed=not created)), 200


# --- services ---------------------------------------------------------------------------


@api_bp.get("/services")
@requires("staff")
def list_services():
    """Services (``status``, ``client_id``, ``q``)."""
    status = choice_arg("status", Service.STATUSES)
    rows, paging = page(
        provisioning.list_services(status, int_arg("client_id"), request.args.get("q"))
    )
    for row in rows:  # a deleted service's secret details are left out (not saved)
        row.details = provisioning.visible_details(row)
    return jsonify(out.ServicePage.of({"services": rows, **paging}))


@api_bp.get("/services/<int:service_id>")
@requires("staff")
def get_service(service_id):
    """A service: status, details and its operations. A deleted service's secret details
    are left out unless ``reveal=secrets`` (recorded in its history)."""
    reveal = request.args.get("reveal") == "secrets"
    service = provisioning.get(service_id)
    if reveal:
        service = provisioning.reveal_secrets(service_id, api_user().email)
    operations_ = provisioning.timeline(service)
    details = provisioning.visible_details(service, reveal=reveal)
    return jsonify(out.ServiceWithOperations.of(service, operations=operations_, details=details))


@api_bp.put("/services/<int:service_id>/details")
@requires("staff")
def edit_service(service_id):
    """Correct a service's detail fields and remote id (checked by their kinds; recorded in
    its history); no module is called."""
    service = provisioning.edit_details(service_id, json_body(), api_user().email)
    return jsonify(out.Service.of(service, details=provisioning.visible_details(service)))


@api_bp.post("/services/import")
@requires("staff")
def import_service():
    """Bind an account that already exists on a panel to a new service: 201, active at
    once, no open operation runs; 409 ``remote_id_bound`` when another live service of the
    module has that remote id."""
    service = imports.import_service(json_body(), api_user().email)
    return jsonify(out.Service.of(service)), 201


@api_bp.post("/services/<int:service_id>/retry-setup")
@requires("staff")
def retry_setup(service_id):
    """Retry the setup of a service whose setup was cancelled (``setup_cancelled``): a new
    ``open`` operation is queued and the service is ``processing`` again."""
    op = provisioning.retry_setup(service_id, api_user().email)
    return jsonify(out.Operation.of(op)), 202


@api_bp.post(f"/services/<int:service_id>/<any({', '.join(REQUESTABLE)}):kind>")
@requires("staff")
def service_action(service_id, kind):
    """Request an operation on a service (suspend, resume, close, change tariff, renew...):
    202 with the operation; 409 when the service's status or its module does not allow it."""
    data = json_body()
    op = provisioning.request(service_id, kind, api_user().email, params=data)
    return jsonify(out.Operation.of(op)), 202


# --- operations -------------------------------------------------------------------------


@api_bp.get("/operations")
@requires("staff")
def list_operations():
    """Operations; without ``status`` the ones not yet finished."""
    status = choice_arg("status", Operation.STATUSES)
    kind = choice_arg("kind", Operation.KINDS)
    query = operations.open_operations(status, int_arg("module_id"), kind)
    service_id = int_arg("service_id")
    if service_id is not None:
        query = query.where(Operation.service == service_id)
    rows, paging = page(query)
    return jsonify(out.OperationPage.of({"operations": rows, **paging}))


@api_bp.get("/operations/<int:operation_id>")
@requires("staff")
def get_operation(operation_id):
    """An operation with every attempt."""
    op = operations.get(operation_id)
    return jsonify(out.OperationWithAttempts.of(op, attempt_log=operations.attempts_of(op)))


@api_bp.post("/operations/<int:operation_id>/restart")
@requires("staff")
def restart_operation(operation_id):
    """Run the operation again now (its department's staff, or an admin)."""
    operations.get_to_act(operation_id, api_user())
    op = operations.restart(operation_id, actor=api_user().email)
    return jsonify(out.Operation.of(op)), 202


@api_bp.post("/operations/<int:operation_id>/cancel")
@requires("staff")
def cancel_operation(operation_id):
    """Cancel an operation that is not running (its department's staff, or an admin)."""
    operations.get_to_act(operation_id, api_user())
    reason = json_body().get("reason")
    op = operations.cancel(operation_id, actor=api_user().email, reason=reason)
    return jsonify(out.Operation.of(op)), 200


@api_bp.post("/operations/<int:operation_id>/take-over")
@requires("staff")
def take_over_operation(operation_id):
    """Set up manually: stop automatic retries and return the operation's task (made if
    none); its department's staff, or an admin."""
    operations.get_to_act(operation_id, api_user())
    user = api_user()
    return jsonify(out.Task.of(operations.take_over(operation_id, user.email, user=user)))


@api_bp.post("/operations/<int:operation_id>/callback")
def operation_callback(operation_id):
    """A module's endpoint completes a pending operation (signed as its module type says:
    the http module signs with its secret)."""
    module = operations.verify_callback(
        operation_id, request.get_data(), request.headers, path=request.path
    )
    op = operations.callback(operation_id, json_body(), module)
    return jsonify(out.Operation.of(op)), 200


# --- tasks ------------------------------------------------------------------------------


@api_bp.get("/tasks")
@requires("staff")
def list_tasks():
    """Tasks of the caller's departments (admins: all); ``department_id``, ``status``,
    ``assignee_id`` or ``mine``, ``kind``, ``priority``, ``q`` (text search), ``sort``
    and ``dir``."""
    user = api_user()
    status = choice_arg("status", Task.STATUSES + ("open",))
    departments = None if user.is_admin else accounts.department_ids_of(user)
    kind = choice_arg("kind", Operation.KINDS)
    sort = choice_arg("sort", tuple(tasks.task_sorts())) or "id"
    direction = choice_arg("dir", ("asc", "desc")) or "desc"
    mine = choice_arg("mine", ("true", "false", "1", "0")) in ("true", "1")
    assignee_id = user.id if mine else int_arg("assignee_id")
    query = tasks.search_tasks(
        status,
        int_arg("department_id"),
        assignee_id,
        departments,
        kind=kind,
        search=request.args.get("q"),
        priority=choice_arg("priority", Task.PRIORITIES),
        sort=sort,
        descending=direction == "desc",
    )
    operation_id = int_arg("operation_id")
    if operation_id is not None:
        query = query.where(Task.operation == operation_id)
    rows, paging = page(query)
    return jsonify(out.TaskPage.of({"tasks": rows, **paging}))


@api_bp.get("/tasks/<int:task_id>")
@requires("staff")
def get_task(task_id):
    """One task with its history (comments, assignments, notes)."""
    task = tasks.get(task_id)
    if not tasks.can_act(api_user(), task):
        raise PermissionDenied("this task belongs to a department you are not in")
    return jsonify(out.TaskWithEvents.of(task, events=tasks.events_of(task)))


@api_bp.post("/tasks/<int:task_id>/comment")
@requires("staff")
def comment_task(task_id):
    """Add a comment to the task's history."""
    return jsonify(out.Task.of(tasks.comment(task_id, api_user(), json_body().get("text"))))


@api_bp.post("/tasks/<int:task_id>/fields")
@requires("staff")
def fill_task_fields(task_id):
    """Fill in detail fields without closing the task."""
    return jsonify(out.Task.of(tasks.save_fields(task_id, api_user(), json_body().get("fields"))))


@api_bp.post("/tasks/<int:task_id>/cancel")
@requires("staff")
def cancel_task(task_id):
    """Cancel the task (nobody will do it); its open operation is cancelled too."""
    return jsonify(out.Task.of(tasks.cancel(task_id, api_user(), json_body().get("reason"))))


@api_bp.post("/tasks/<int:task_id>/reopen")
@requires("admin")
def reopen_task(task_id):
    """Reopen a closed or cancelled task (admins)."""
    return jsonify(out.Task.of(tasks.reopen(task_id, api_user())))


@api_bp.post("/tasks/<int:task_id>/assign")
@requires("staff")
def assign_task(task_id):
    """Assign the task to the caller, or to ``user_id``: a member of its department (or
    an admin)."""
    data = TaskAssignInput.parse(json_body())
    assignee = None
    if data["user_id"] is not None:
        assignee = User.get_or_none_by_id(data["user_id"])
        if assignee is None or not assignee.is_staff:
            raise ValidationError({"user_id": "Choose a staff member."})
    task = tasks.assign(task_id, api_user(), assignee, force=data["force"])
    return jsonify(out.Task.of(task))


@api_bp.post("/tasks/<int:task_id>/plan")
@requires("staff")
def plan_task(task_id):
    """Set the task's ``priority`` and ``due_at`` (a key left out stays as it is)."""
    return jsonify(out.Task.of(tasks.plan(task_id, api_user(), json_body())))


@api_bp.post("/tasks/<int:task_id>/close")
@requires("staff")
def close_task(task_id):
    """Close the task with the detail fields: the operation completes."""
    data = json_body()
    task = tasks.close(task_id, api_user(), data.get("fields"), data.get("comment"))
    return jsonify(out.Task.of(task))


# --- resellers: another Provisor orders here, paid on account --------------------------


def _reseller():
    return resellers.reseller_of(api_user())


@api_bp.post("/clients/<int:client_id>/reseller")
@requires("admin")
def enable_reseller(client_id):
    """Make a client a reseller paying on account; answers its new bearer token (once)."""
    client, token = resellers.enable(client_id)
    return jsonify(out.ResellerToken.of({"client": client, "token": token})), 201


@api_bp.delete("/clients/<int:client_id>/reseller")
@requires("admin")
def disable_reseller(client_id):
    """The client is no reseller any more: its reseller tokens stop working."""
    client = resellers.disable(client_id)
    return jsonify(out.ResellerToken.of({"client": client, "token": None}))


# --- outgoing events (webhooks) ---------------------------------------------------------


@api_bp.get("/webhook-endpoints")
@requires("admin")
def list_webhook_endpoints():
    """Webhook endpoints: where outgoing events go (secrets never answered)."""
    return jsonify(out.WebhookEndpointList.of({"endpoints": events.endpoints()}))


@api_bp.post("/webhook-endpoints")
@requires("admin")
def create_webhook_endpoint():
    """Add a webhook endpoint; its URL must pass the outbound checks."""
    return jsonify(out.WebhookEndpoint.of(events.create_endpoint(json_body()))), 201


@api_bp.get("/webhook-endpoints/<int:endpoint_id>")
@requires("admin")
def get_webhook_endpoint(endpoint_id):
    """One webhook endpoint."""
    return jsonify(out.WebhookEndpoint.of(events.get_endpoint(endpoint_id)))


@api_bp.put("/webhook-endpoints/<int:endpoint_id>")
@requires("admin")
def update_webhook_endpoint(endpoint_id):
    """Change a webhook endpoint (all fields; a blank secret keeps the current one)."""
    return jsonify(out.WebhookEndpoint.of(events.update_endpoint(endpoint_id, json_body())))


@api_bp.delete("/webhook-endpoints/<int:endpoint_id>")
@requires("admin")
def delete_webhook_endpoint(endpoint_id):
    """Remove a webhook endpoint and its deliveries."""
    endpoint = events.get_endpoint(endpoint_id)
    events.delete_endpoint(endpoint_id)
    return jsonify(out.WebhookEndpoint.of(endpoint))


@api_bp.post("/webhook-endpoints/<int:endpoint_id>/test")
@requires("admin")
def test_webhook_endpoint(endpoint_id):
    """Send an ``endpoint.test`` event now; the delivery says what the endpoint answered."""
    return jsonify(_delivery(events.send_test(endpoint_id)))


@api_bp.get("/event-types")
@requires("admin")
def list_event_types():
    """Every event a webhook endpoint may ask for (one per status of each state machine)."""
    return jsonify(out.EventTypeList.of({"event_types": list(events.event_types())}))


def _delivery(delivery):
    return out.EventDeliveryWithAttempts.of(
        delivery,
        attempt_log=events.attempts_of(delivery),
        payload=json.loads(events.body_of(delivery.event)),
    )


@api_bp.get("/event-deliveries")
@requires("admin")
def list_event_deliveries():
    """The delivery log, newest first (``endpoint_id``, ``status``, ``type``)."""
    status = choice_arg("status", EventDelivery.STATUSES)
    rows, paging = page(
        events.deliveries(int_arg("endpoint_id"), status, request.args.get("type") or None)
    )
    return jsonify(out.EventDeliveryPage.of({"deliveries": rows, **paging}))


@api_bp.get("/event-deliveries/<int:delivery_id>")
@requires("admin")
def get_event_delivery(delivery_id):
    """One delivery with each attempt (status code, time, error, answer) and its body."""
    return jsonify(_delivery(events.get_delivery(delivery_id)))


@api_bp.post("/event-deliveries/<int:delivery_id>/retry")
@requires("admin")
def retry_event_delivery(delivery_id):
    """ "Retry now": a waiting or failed delivery is sent again at once (same event id)."""
    return jsonify(_delivery(events.retry(delivery_id))), 202


@api_bp.get("/reseller/tariffs")
@requires("reseller")
def reseller_tariffs():
    """The tariffs a reseller may order, with their order and detail fields."""
    return jsonify(out.ResellerTariffList.of({"tariffs": resellers.tariffs()}))


def _reseller_order(order, op, key, replayed):
    return out.ResellerOrder.of(
        {
            "order_id": order.id,
            "status": order.status,
            "tariff_id": order.tariff_id,
            "service_id": order.service_id,
            "service_status": Service.get_by_id(order.service_id).status,
            "operation_id": op.id if op is not None else None,
            "amount": order.amount,
            "currency": order.currency,
            "idempotency_key": key,
            "replayed": replayed,
        }
    )


@api_bp.post("/reseller/orders")
@requires("reseller")
def reseller_order():
    """Order a tariff paid on account: 201 with the order, its service and the open
    operation; the same idempotency key again: 200 with the same order."""
    data = json_body()
    order, op, created = resellers.order(_reseller(), data)
    body = _reseller_order(order, op, data["idempotency_key"], not created)
    return jsonify(body), 201 if created else 200


def _reseller_operation(op):
    return out.ResellerOperation.of(op)


@api_bp.get("/reseller/services/<int:service_id>")
@requires("reseller")
def reseller_service(service_id):
    """One of the reseller's services: status, details (secret ones included) and its
    newest operation."""
    service = resellers.service(_reseller(), service_id)
    current = resellers.current_operation(service)
    return jsonify(
        out.ResellerService.of(
            service,
            operation=None if current is None else _reseller_operation(current),
            details=provisioning.visible_details(service),
        )
    )


@api_bp.get("/reseller/operations/<int:operation_id>")
@requires("reseller")
def reseller_operation(operation_id):
    """An operation on one of the reseller's services."""
    return jsonify(_reseller_operation(resellers.operation(_reseller(), operation_id)))


@api_bp.post(f"/reseller/services/<int:service_id>/<any({', '.join(REQUESTABLE)}):kind>")
@requires("reseller")
def reseller_action(service_id, kind):
    """Ask for an operation on one of the reseller's services: 202 with the operation;
    the same idempotency key again: 200 with the same operation."""
    op, created = resellers.act(_reseller(), service_id, kind, json_body())
    return jsonify(_reseller_operation(op)), 202 if created else 200


# --- outbox -----------------------------------------------------------------------------


@api_bp.get("/emails")
@requires("staff")
def list_emails():
    """The outbox: every email, newest first."""
    status = choice_arg("status", Email.STATUSES)
    query = Email.select().order_by(Email.id.desc())
    if status:
        query = query.where(Email.status == status)
    service_id = int_arg("service_id")
    if service_id is not None:
        query = query.where(Email.service == service_id)
    kind = request.args.get("kind")
    if kind:
        if len(kind) > 40:
            raise ValidationError({"kind": "At most 40 characters."})
        query = query.where(Email.kind == kind)
    rows, paging = page(query)
    for row in rows:  # a deleted service's passwords masked (not saved)
        row.body = provisioning.hidden_in(row.body, row.service if row.service_id else None)
    return jsonify(out.EmailPage.of({"emails": rows, **paging}))


__all__ = ["api_bp"]
