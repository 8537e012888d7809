"""JSON shapes of the API's objects (one function per model)."""

from decimal import Decimal


def money(value):
    """Amounts always with two decimals ("10.00"), whatever the database gives back."""
    return f"{Decimal(value):.2f}"


def _time(value):
    return value.isoformat(timespec="seconds") + "Z" if value else None


def client(c):
    return {"id": c.id, "name": c.name, "email": c.email, "created_at": _time(c.created_at)}


def department(d):
    return {"id": d.id, "name": d.name, "notify_email": d.notify_email}


def user(u, department_ids=None):
    data = {"id": u.id, "email": u.email, "name": u.name, "role": u.role, "is_active": u.is_active}
    if department_ids is not None:
        data["department_ids"] = department_ids
    return data


def module(m, secrets=None):
    config = dict(m.config or {})
    for name in secrets or ():
        if config.get(name):
            config[name] = "********"
    return {
        "id": m.id,
        "name": m.name,
        "type": m.type,
        "config": config,
        "department_id": m.department_id,
        "retry_delay": m.retry_delay,
        "max_attempts": m.max_attempts,
        "max_wait": m.max_wait,
        "max_running": m.max_running,
        "priority": m.priority,
        "enabled": m.enabled,
    }


def item(i):
    return {
        "id": i.id,
        "module_id": i.module_id,
        "internal_name": i.internal_name,
        "status": i.status,
        "remote_id": i.remote_id,
        "error": i.error,
    }


def tariff(t, module_ids=None, orderable=None, items=None):
    data = {
        "id": t.id,
        "name": t.name,
        "product_type": t.product_type.code,
        "price": money(t.price),
        "currency": t.currency,
        "period": t.period,
        "internal_name": t.internal_name,
        "archived": t.is_archived,
        "order_fields": t.product_type.order_fields or [],
    }
    if module_ids is not None:
        data["module_ids"] = module_ids
    if orderable is not None:
        data["orderable"] = orderable
    if items is not None:
        data["items"] = items
    return data


def order(o):
    return {
        "id": o.id,
        "status": o.status,
        "client_id": o.client_id,
        "tariff_id": o.tariff_id,
        "service_id": o.service_id,
        "amount": money(o.amount),
        "currency": o.currency,
        "created_at": _time(o.created_at),
        "paid_at": _time(o.paid_at),
    }


def attempt(a):
    return {
        "number": a.number,
        "started_at": _time(a.started_at),
        "finished_at": _time(a.finished_at),
        "outcome": a.outcome,
        "error": a.error,
        "log": a.log,
        "worker": a.worker,
    }


def operation(op, attempts=None):
    data = {
        "id": op.id,
        "kind": op.kind,
        "operation": op.kind,
        "status": op.status,
        "service_id": op.service_id,
        "item_id": op.item_id,
        "module_id": op.module_id,
        "attempts": op.attempts,
        "failures": op.failures,
        "next_run_at": _time(op.next_run_at),
        "deadline_at": _time(op.deadline_at),
        "state": op.state,
        "last_error": op.last_error,
        "completed_by": op.completed_by,
        "params": op.params or {},
        "created_at": _time(op.created_at),
        "updated_at": _time(op.updated_at),
        "finished_at": _time(op.finished_at),
    }
    if attempts is not None:
        data["attempt_log"] = [attempt(a) for a in attempts]
    return data


def service(s, operations=None):
    data = {
        "id": s.id,
        "status": s.status,
        "client_id": s.client_id,
        "tariff_id": s.tariff_id,
        "module_id": s.module_id,
        "remote_id": s.remote_id,
        "details": s.details or {},
        "params": s.params or {},
        "module_choice": s.module_choice,
        "module_data": s.module_data or {},
        "expires_at": _time(s.expires_at),
        "created_at": _time(s.created_at),
        "activated_at": _time(s.activated_at),
    }
    if operations is not None:
        data["operations"] = [operation(op) for op in operations]
    return data


def task(t):
    return {
        "id": t.id,
        "title": t.title,
        "status": t.status,
        "department_id": t.department_id,
        "service_id": t.service_id,
        "operation_id": t.operation_id,
        "assignee_id": t.assignee_id,
        "fields": t.fields or {},
        "created_at": _time(t.created_at),
        "closed_at": _time(t.closed_at),
        "closed_by": t.closed_by,
    }


def task_event(e):
    return {"kind": e.kind, "actor": e.actor, "text": e.text, "created_at": _time(e.created_at)}


def email(e):
    return {
        "id": e.id,
        "to": e.to,
        "subject": e.subject,
        "body": e.body,
        "kind": e.kind,
        "service_id": e.service_id,
        "status": e.status,
        "attempts": e.attempts,
        "last_error": e.last_error,
        "created_at": _time(e.created_at),
        "sent_at": _time(e.sent_at),
    }
