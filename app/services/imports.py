"""Importing existing accounts: a provider moving to Provisor binds an account that
already exists on a panel to a new service, without running ``open``.

Staff pick a client, a tariff, the module, the account's remote id and its detail fields;
the service is created ``active`` at once (``SERVICE`` action ``import``), and an ``open``
operation is recorded as done, completed "imported by <staff>", so that the service's
operations say where it came from; its history says so too. No welcome email is sent
(the client has had the account all along). A module type that lists the accounts on its
panel (``ModuleType.list_accounts``) lets staff pick one from the list. One account serves
one service: a remote id already bound to another live service of the same module is
refused (409 ``remote_id_bound``).
"""

import logging

from app.db import get_for_update, write_transaction
from app.models import Client, ProcessingModule, Service, Tariff, TariffModule, utcnow
from app.services import detail_fields, operations, provisioning
from app.services.errors import Conflict, NotFound, ValidationError
from app.states import OPERATION, SERVICE

log = logging.getLogger(__name__)


def modules_of(tariff):
    """The modules that serve ``tariff`` (an import binds to one of them)."""
    return list(
        ProcessingModule.select()
        .join(TariffModule)
        .where(TariffModule.tariff == tariff.id)
        .order_by(ProcessingModule.name)
    )


def listing_modules():
    """Modules whose type lists the accounts on its panel."""
    return [
        m
        for m in ProcessingModule.select().order_by(ProcessingModule.name)
        if (cls := operations.module_type(m)) is not None and cls.can_list_accounts()
    ]


def accounts(module_id):
    """The accounts on the module's panel, each with ``bound_to``: the id of the live
    service already bound to it (None: free to import). Conflict when the module's type
    lists none; a panel that cannot be asked is a Conflict saying why."""
    module = ProcessingModule.get_or_none_by_id(module_id)
    if module is None:
        raise NotFound(f"module {module_id} not found")
    cls = operations.module_type(module)
    if cls is None or not cls.can_list_accounts():
        raise Conflict(
            f"module {module.name} cannot list the accounts on its panel; import by remote id",
            code="cannot_list_accounts",
        )
    try:
        listed = cls(module.config or {}).list_accounts()
    except Exception as exc:  # the panel's answer (or a module's bug) is said, never a 500
        log.warning("module %s: listing accounts failed: %s", module.name, exc)
        raise Conflict(f"module {module.name} could not list its accounts: {exc}") from None
    bound = {
        s.remote_id: s.id
        for s in Service.select(Service.id, Service.remote_id).where(
            (Service.module == module.id)
            & (Service.status != "deleted")
            & Service.remote_id.in_([str(a.get("remote_id")) for a in listed] or [""])
        )
    }
    return [
        {
            "remote_id": str(a.get("remote_id")),
            "summary": str(a.get("summary") or ""),
            "details": {str(k): str(v) for k, v in (a.get("details") or {}).items()},
            "bound_to": bound.get(str(a.get("remote_id"))),
        }
        for a in listed
        if a.get("remote_id")
    ]


def _check(data):
    errors = {}
    if not isinstance(data, dict):
        raise ValidationError({"client_id": "Give the import as an object."})
    client = Client.get_or_none_by_id(data.get("client_id"))
    if client is None:
        errors["client_id"] = "Choose an existing client."
    tariff = Tariff.get_or_none_by_id(data.get("tariff_id"))
    if tariff is None:
        errors["tariff_id"] = "Choose an existing tariff."
    module = ProcessingModule.get_or_none_by_id(data.get("module_id"))
    if module is None:
        errors["module_id"] = "Choose a module."
    elif tariff is not None and module.id not in {m.id for m in modules_of(tariff)}:
        errors["module_id"] = "This module does not serve the tariff."
    remote_id = provisioning.clean_remote_id(data.get("remote_id"), errors, required=True)
    details = data.get("details") or {}
    cleaned = {}
    if not isinstance(details, dict):
        errors["details"] = "Give the details as an object."
    elif tariff is not None:
        declared = tariff.product_type.detail_fields or []
        try:
            cleaned = detail_fields.clean(declared, details, unknown="refuse")
        except ValidationError as exc:
            errors.update({f"details.{k}": v for k, v in exc.fields.items()})
    if errors:
        raise ValidationError(errors)
    return client, tariff, module, remote_id, cleaned


def import_service(data, actor):
    """Bind an existing account to a new service (``data``: ``client_id``, ``tariff_id``,
    ``module_id``, ``remote_id``, ``details``): active at once, nothing runs. Returns the
    service; 409 ``remote_id_bound`` when another live service of the module has it."""
    client, tariff, module, remote_id, details = _check(data)
    now = utcnow()
    with write_transaction():
        get_for_update(ProcessingModule, module.id)  # one import per module at a time
        provisioning.refuse_bound(module, remote_id)
        service = Service.create(
            client=client,
            tariff=tariff,
            module=module,
            status="ordered",
            remote_id=remote_id,
            details=details,
            params={},
            created_at=now,
            updated_at=now,
        )
        SERVICE.move(service, "import")
        service.activated_at = now
        service.save()
        op = operations.create(
            "open", module=module, service=service, params={"imported_by": actor}
        )
        OPERATION.move(op, "complete")
        op.completed_by = f"imported by {actor}"
        op.next_run_at = None
        op.dispatched_at = None
        op.finished_at = now
        op.save()
        provisioning.record_event(
            service,
            "imported",
            actor,
            f"Imported: account {remote_id} on module {module.name} (no open operation ran).",
            now,
        )
    log.info("service %s imported by %s: %s on %s", service.id, actor, remote_id, module.name)
    return service
