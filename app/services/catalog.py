"""The catalog: product types, tariff plans, processing modules and their items.

Every function takes plain data (a dict from a form or JSON), validates it and raises
:class:`ValidationError` with a message per field, changing nothing when input is bad.
"""

import modules
from app.db import get_for_update, write_transaction
from app.messages import Reason
from app.models import (
    Department,
    Item,
    Operation,
    ProcessingModule,
    ProductType,
    Tariff,
    TariffModule,
    parse_id,
    utcnow,
)
from app.objects.inputs import (
    DepartmentInput,
    ModuleFields,
    ModuleUpdate,
    TariffInput,
)
from app.services import detail_fields, dispatch, order_fields
from app.services.errors import Conflict, NotFound, ValidationError, unique_fields
from app.states import ITEM

FIELD_NAME = order_fields.FIELD_NAME
PERIODS = Tariff.PERIODS
DEPARTMENT_UNIQUE = {"name": "A department with this name exists."}
MODULE_UNIQUE = {"name": "A module with this name exists."}


def _text(data, name, errors, required=True, max_length=200):
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors[name] = "This field is required."
        return None
    if not isinstance(value, str):
        errors[name] = "Must be text."
        return None
    value = value.strip()
    if len(value) > max_length:
        errors[name] = f"At most {max_length} characters."
        return None
    return value


# --- product types ----------------------------------------------------------------------


def product_types():
    return list(ProductType.select().order_by(ProductType.id))


def product_type_by(code_or_id):
    if code_or_id is None:
        return None
    if parse_id(code_or_id) is not None:
        return ProductType.get_or_none_by_id(code_or_id)
    return ProductType.get_or_none(ProductType.code == str(code_or_id))


def parse_detail_fields(text):
    """Detail fields from lines ``name | Label | kind | required | secret`` (see
    :mod:`app.services.detail_fields`; a line without a kind is text)."""
    return detail_fields.parse(text)


def format_detail_fields(fields):
    return detail_fields.format_lines(fields)


def update_product_type(product_type_id, data):
    errors = {}
    pt = ProductType.get_or_none_by_id(product_type_id)
    if pt is None:
        raise NotFound(f"product type {product_type_id} not found")
    name = _text(data, "name", errors)
    fields = data.get("detail_fields")
    if isinstance(fields, str):
        fields, problems = parse_detail_fields(fields)
        if problems:
            errors["detail_fields"] = "; ".join(problems)
    elif isinstance(fields, list):
        fields, problem = detail_fields.check_declared(fields)
        if problem:
            errors["detail_fields"] = problem
    else:
        errors["detail_fields"] = "Give the detail fields."
    order_specs = data.get("order_fields", pt.order_fields or [])
    if isinstance(order_specs, str):
        order_specs, problems = order_fields.parse(order_specs)
        if problems:
            errors["order_fields"] = "; ".join(problems)
    elif not isinstance(order_specs, list) or any(
        not isinstance(f, dict)
        or not order_fields.FIELD_NAME.match(str(f.get("name", "")))
        or f.get("kind", "text") not in order_fields.KINDS
        for f in order_specs
    ):
        errors["order_fields"] = "Each field needs a name (a-z, 0-9, _) and a known kind."
    subject = _text(data, "welcome_subject", errors)
    template = _text(data, "welcome_template", errors, max_length=20000)
    for key, value in (("welcome_subject", subject), ("welcome_template", template)):
        if value and key not in errors:
            try:
                from jinja2.sandbox import SandboxedEnvironment

                SandboxedEnvironment().from_string(value)
            except Exception as exc:
                errors[key] = f"Template error: {exc}"
    notices = _notice_templates(pt, data, errors)
    if errors:
        raise ValidationError(errors)
    with write_transaction():
        pt.name = name
        pt.notice_templates = notices
        pt.detail_fields = [detail_fields.normalized(f) for f in fields]
        pt.order_fields = order_specs
        pt.welcome_subject = subject
        pt.welcome_template = template
        pt.save()
    return pt


def notice_field(kind, part):
    """The form (and input) name of a notice template's part: ``notice_suspend_subject``,
    ``notice_suspend_template``."""
    return f"notice_{kind}_{part}"


def notice_form(product_type):
    """The notice templates of ``product_type`` as form values (the defaults where it has
    none of its own)."""
    from app.services import mail

    form = {}
    for kind in mail.NOTICE_KINDS:
        subject, text = mail.notice_template(product_type, kind)
        form[notice_field(kind, "subject")] = subject
        form[notice_field(kind, "template")] = text
    return form


def _notice_templates(pt, data, errors):
    """The notice templates given in ``data`` (a part not given keeps what the product
    type has), each compiled: one with an error is refused with the field's message.
    A text equal to the default is not stored (it follows the default)."""
    from jinja2.sandbox import SandboxedEnvironment

    from app.services import mail

    stored = {}
    for kind in mail.NOTICE_KINDS:
        current = mail.notice_template(pt, kind)
        defaults = mail.NOTICE_DEFAULTS[kind]
        own = {}
        for index, part in enumerate(("subject", "template")):
            name = notice_field(kind, part)
            if name in data:
                value = _text(data, name, errors, max_length=250 if part == "subject" else 20000)
            else:
                value = current[index]
            if value is None:
                continue
            try:
                SandboxedEnvironment().from_string(value)
            except Exception as exc:
                errors[name] = f"Template error: {exc}"
                continue
            if value.strip() != defaults[index].strip():
                own[part] = value
        if own:
            stored[kind] = own
    return stored


# --- departments ------------------------------------------------------------------------


def departments():
    return list(Department.select().order_by(Department.name))


DEFAULT_DEPARTMENT = "Support"
DEPARTMENT_REQUIRED = (
    "Choose the department that gets this module's tasks: every module needs one, or its "
    "tasks would reach nobody."
)
DEFAULT = object()  # a module's department not given: the default department


def default_department():
    """The default department, "Support" (made when there is none of that name): a module
    created without a department gets it, as migration 0011 gave it to older modules."""
    department = Department.get_or_none(Department.name == DEFAULT_DEPARTMENT)
    if department is None:
        department = Department.create(name=DEFAULT_DEPARTMENT)
    return department


def _department_fields(data, existing=None):
    values, errors = DepartmentInput.check(data)
    if "name" not in errors:
        clash = Department.select().where(Department.name == values["name"])
        if existing is not None:
            clash = clash.where(Department.id != existing.id)
        if clash.exists():
            errors["name"] = DEPARTMENT_UNIQUE["name"]
    if errors:
        raise ValidationError(errors)
    return values


def create_department(data):
    """A department; ``notify_email`` gets an email on each new task."""
    values = _department_fields(data)
    with unique_fields(DEPARTMENT_UNIQUE), write_transaction():
        return Department.create(**values)


def get_department(department_id):
    department = Department.get_or_none_by_id(department_id)
    if department is None:
        raise NotFound(f"department {department_id} not found")
    return department


def update_department(department_id, data):
    department = get_department(department_id)
    values = _department_fields(data, existing=department)
    with unique_fields(DEPARTMENT_UNIQUE), write_transaction():
        Department.update(**values).where(Department.id == department.id).execute()
    return get_department(department.id)


# --- processing modules -----------------------------------------------------------------


def module_types():
    return modules.types()


def processing_modules():
    return list(ProcessingModule.select().order_by(ProcessingModule.id))


def modules_with(capability):
    """The processing modules whose type declares ``capability`` (a class attribute that
    is true, e.g. ``dns_challenges``), by id."""
    return [
        m
        for m in processing_modules()
        if getattr(modules.get_type(m.type), capability, False) is True
    ]


def get_module(module_id):
    module = ProcessingModule.get_or_none_by_id(module_id)
    if module is None:
        raise NotFound(f"module {module_id} not found")
    return module


def _module_fields(data, errors, existing=None):
    values, problems = (ModuleFields if existing is None else ModuleUpdate).check(data)
    errors.update(problems)
    cls = modules.get_type(existing.type if existing is not None else values["type"])
    values["type"] = cls.id if cls is not None else None
    config = values.pop("config")
    if cls is not None and config is not None:
        if existing is not None:
            # a secret left blank in a form keeps its stored value
            for f in cls.config_fields:
                if f.kind == "secret" and config.get(f.name) in (None, ""):
                    config = {**config, f.name: (existing.config or {}).get(f.name)}
        cleaned, config_errors = cls.validate_config(config)
        for key, message in config_errors.items():
            errors[f"config.{key}"] = message
        values["config"] = cleaned
    # every module has a department (its tasks go there): a blank one is refused; one
    # not given keeps the module's, or is the default department (Support) for a new one
    department_id = values.pop("department_id")
    values["department"] = None
    if department_id is not None:
        values["department"] = Department.get_or_none_by_id(department_id)
        if values["department"] is None:
            errors["department_id"] = "Choose an existing department."
    elif "department_id" in data and "department_id" not in errors:
        errors["department_id"] = DEPARTMENT_REQUIRED
    elif existing is not None and existing.department_id is not None:
        values["department"] = existing.department
    else:
        values["department"] = DEFAULT
    if "name" not in errors:
        clash = ProcessingModule.select().where(ProcessingModule.name == values["name"])
        if existing is not None:
            clash = clash.where(ProcessingModule.id != existing.id)
        if clash.exists():
            errors["name"] = MODULE_UNIQUE["name"]
    return values


def create_module(data):
    """A processing module; with ``test_connection`` true its settings are tested first (Test
    connection) and a failing test saves nothing."""
    errors = {}
    values = _module_fields(data, errors)
    if errors:
        raise ValidationError(errors)
    if values.pop("test_connection"):
        _require_working(values["type"], values["config"])
    with unique_fields(MODULE_UNIQUE), write_transaction():
        if values["department"] is DEFAULT:
            values["department"] = default_department()
        return ProcessingModule.create(**values)


def update_module(module_id, data):
    module = get_module(module_id)
    errors = {}
    values = _module_fields(data, errors, existing=module)
    if errors:
        raise ValidationError(errors)
    if values.pop("test_connection"):
        _require_working(module.type, values["config"])
    was_enabled = module.enabled
    with unique_fields(MODULE_UNIQUE), write_transaction():
        if values["department"] is DEFAULT:
            values["department"] = default_department()
        for key, value in values.items():
            setattr(module, key, value)
        module.save()
        if module.enabled and not was_enabled:
            for tariff in module_tariffs(module):
                ensure_item(module, tariff)
    return module


def check_settings(type_id, config):
    """ "Test connection": the module type talks to its server with these (cleaned)
    settings. ``{"ok", "message", "fields"}``; ``fields`` names the setting at fault
    (``config.<name>``) with the server's own words."""
    return _check(type_id, config)[0]


def _check(type_id, config):
    """:func:`check_settings` and the settings the test learned (``config_updates``: a
    host key pinned on first contact), which the caller saves with the module."""
    cls = modules.get_type(type_id)
    if cls is None:
        return {"ok": False, "message": f"Unknown module type {type_id!r}.", "fields": {}}, {}
    if not cls.can_check():
        return {
            "ok": True,
            "message": f"{cls.name} has no connection to test.",
            "fields": {},
        }, {}
    try:
        instance = cls(dict(config or {}))
        verified = instance.check_config()
    except modules.ConfigProblem as exc:
        fields = {f"config.{exc.field}": exc.message} if exc.field else {}
        return {"ok": False, "message": exc.message, "fields": fields}, {}
    except Exception as exc:  # a module's bug is its answer, never a 500
        return {"ok": False, "message": f"{exc.__class__.__name__}: {exc}", "fields": {}}, {}
    updates = dict(getattr(instance, "config_updates", None) or {})
    return {
        "ok": True,
        "message": f"Connection works: {verified}." if verified else "Connection works.",
        "fields": {},
    }, updates


def check_module(module_id):
    """Test connection with a saved module's settings; what the test learned (a pinned
    host key) is saved into them."""
    module = get_module(module_id)
    result, updates = _check(module.type, module.config)
    if updates:
        with write_transaction():
            fresh = get_for_update(ProcessingModule, module.id)
            config = dict(fresh.config or {})
            # only what is still unset: a concurrent edit or test wins
            learned = {k: v for k, v in updates.items() if not config.get(k)}
            if learned:
                fresh.config = {**config, **learned}
                fresh.save()
    return result


def check_form(data, existing=None):
    """Test connection with settings from a form (a blank secret keeps the stored one);
    invalid settings are reported as such, nothing is saved."""
    errors = {}
    values = _module_fields({**data, "name": data.get("name") or "check"}, errors, existing)
    if "type" in errors:
        return {"ok": False, "message": errors["type"], "fields": {}}
    config_errors = {k: v for k, v in errors.items() if k.startswith("config")}
    if config_errors:
        return {"ok": False, "message": "Fix the settings first.", "fields": config_errors}
    return check_settings(values["type"], values["config"])


def _require_working(type_id, config):
    """Test connection before saving; what it learned goes into ``config`` (saved)."""
    result, updates = _check(type_id, config)
    if not result["ok"]:
        raise ValidationError(
            result["fields"] or {"config": result["message"]},
            message=f"Test connection failed: {result['message']}",
        )
    for key, value in updates.items():
        if not config.get(key):
            config[key] = value


def module_tariffs(module):
    return list(Tariff.select().join(TariffModule).where(TariffModule.module == module.id))


# --- items ------------------------------------------------------------------------------


def ensure_item(module, tariff, settings=None):
    """Make sure ``module`` has the item for ``tariff``'s internal name (in a transaction).

    Tariffs sharing an internal name share one item: if it exists nothing is queued,
    unless ``settings`` (its ``item_fields``, from the tariff) changed: then the module
    makes or checks it again with them.
    """
    from app.services import operations

    cls = modules.get_type(module.type)
    if cls is None or not cls.supports("ensure_item"):
        return None
    item = Item.get_or_none(
        (Item.module == module.id) & (Item.internal_name == tariff.internal_name)
    )
    now = utcnow()
    if item is not None and settings is not None and settings != (item.settings or {}):
        item.settings = settings
        item.updated_at = now
        if ITEM.allows("update", item.status):
            ITEM.move(item, "update")  # ready: check it again with the new settings
        item.save()
        if item.status == "creating" and not _item_in_progress(item):
            op = operations.create("ensure_item", module=module, item=item)
            dispatch.operation(op.id)
            return item
    if item is not None and not ITEM.allows("ensure", item.status):
        return item  # ready, or being created
    if item is None:
        item = Item.create(
            module=module,
            internal_name=tariff.internal_name,
            status="creating",
            settings=settings or {},
            updated_at=now,
        )
    else:
        ITEM.move(item, "ensure")
        item.error = None
        item.updated_at = now
        item.save()
    if not cls.creates_items:
        op = operations.create("ensure_item", module=module, item=item)
        reason = Reason("cannot_create_items", module_type=cls.name)
        ITEM.move(item, "needs_person")
        item.error = str(reason)
        item.save()
        operations.escalate(op, reason, now)
        return item
    op = operations.create("ensure_item", module=module, item=item)
    dispatch.operation(op.id)
    return item


def _item_in_progress(item):
    return (
        Operation.select()
        .where((Operation.item == item.id) & Operation.status.in_(Operation.OPEN_STATUSES))
        .exists()
    )


def item_settings_for(module, internal_name):
    """The settings a module's item for this internal name holds now ({} if none)."""
    item = Item.get_or_none((Item.module == module.id) & (Item.internal_name == internal_name))
    return dict(item.settings or {}) if item is not None else {}


def mark_item_ready(item_id, remote_id=None, actor="staff"):
    """A person created the item by hand: it is ready, its open operation is done."""
    from app.services import operations

    item = Item.get_or_none_by_id(item_id)
    if item is None:
        raise NotFound(f"item {item_id} not found")
    now = utcnow()
    with write_transaction():
        ITEM.move(item, "ready")
        item.error = None
        item.remote_id = remote_id or item.remote_id
        item.updated_at = now
        item.save()
        for op in Operation.select().where(
            (Operation.item == item.id) & Operation.status.in_(Operation.OPEN_STATUSES)
        ):
            operations.complete_manually(op, {}, actor, now)
    return Item.get_by_id(item.id)


def items_for(tariff):
    return list(
        Item.select(Item, ProcessingModule)
        .join(ProcessingModule)
        .join(TariffModule, on=(TariffModule.module == ProcessingModule.id))
        .where((TariffModule.tariff == tariff.id) & (Item.internal_name == tariff.internal_name))
    )


# --- tariffs ----------------------------------------------------------------------------


def tariffs(include_archived=False):
    query = Tariff.select(Tariff, ProductType).join(ProductType).order_by(Tariff.id)
    if not include_archived:
        query = query.where(Tariff.is_archived == False)  # noqa: E712
    return list(query)


def get_tariff(tariff_id):
    tariff = Tariff.get_or_none_by_id(tariff_id)
    if tariff is None:
        raise NotFound(f"tariff {tariff_id} not found")
    return tariff


def tariff_modules(tariff):
    return list(
        ProcessingModule.select()
        .join(TariffModule)
        .where(TariffModule.tariff == tariff.id)
        .order_by(ProcessingModule.priority, ProcessingModule.id)
    )


def is_orderable(tariff):
    """Orderable once at least one enabled processing module serves it."""
    return (
        not tariff.is_archived
        and ProcessingModule.select()
        .join(TariffModule)
        .where((TariffModule.tariff == tariff.id) & (ProcessingModule.enabled == True))  # noqa: E712
        .exists()
    )


def orderable_tariffs():
    """The tariffs a client may order, each with its ``order_fields`` (see
    :func:`order_fields_for`) and ``availability_field`` (the order field whose value
    the order form checks, see :func:`availability_checkers`; None: none)."""
    found = [t for t in tariffs() if is_orderable(t)]
    for tariff in found:
        tariff.order_fields = order_fields_for(tariff)
        checkers = availability_checkers(tariff)
        tariff.availability_field = checkers[0][1] if checkers else None
    return found


def availability_checkers(tariff):
    """``[(module instance, order field)]`` of the tariff's enabled modules whose type
    declares ``checks_availability`` (a registry that knows whether a name is taken)."""
    found = []
    for module in tariff_modules(tariff):
        cls = modules.get_type(module.type)
        if module.enabled and cls is not None and cls.checks_availability is True:
            found.append((cls(module.config or {}), cls.availability_field))
    return found


def order_fields_for(tariff):
    """The order fields of ``tariff``: its product type's, with the choices its enabled
    modules offer from the tariff's item (a VPS plan's OS images) in place of the product
    type's own. Where several modules serve it, only what all of them offer (whichever
    module takes the order must be able to serve the choice)."""
    offered = {}
    for module in tariff_modules(tariff):
        cls = modules.get_type(module.type)
        if not module.enabled or cls is None:
            continue
        settings = item_settings_for(module, tariff.internal_name)
        for name, options in (cls(module.config or {}).order_field_options(settings) or {}).items():
            options = [str(o) for o in options]
            if name in offered:
                options = [o for o in offered[name] if o in options]
            offered[name] = options
    fields = []
    for spec in tariff.product_type.order_fields or []:
        if spec.get("name") in offered:
            spec = {**spec, "kind": "choice", "options": offered[spec["name"]]}
            spec.pop("max_length", None)
        fields.append(spec)
    return fields


def _tariff_fields(data, errors):
    values, problems = TariffInput.check(data)
    errors.update(problems)
    pt = product_type_by(values["product_type"])
    if pt is None:
        errors["product_type"] = "Choose a product type: " + ", ".join(
            p.code for p in product_types()
        )
    values["product_type"] = pt
    module_ids = values.pop("module_ids") or []
    found = (
        list(ProcessingModule.select().where(ProcessingModule.id.in_(module_ids)))
        if module_ids
        else []
    )
    if len(found) != len(module_ids):
        missing = sorted(set(module_ids) - {m.id for m in found})
        errors["module_ids"] = f"Unknown module id(s): {', '.join(map(str, missing))}."
    elif pt is not None:
        for module in found:
            cls = modules.get_type(module.type)
            serves = cls.product_types if cls is not None else None
            if serves is not None and pt.code not in serves:
                errors["module_ids"] = (
                    f"{module.name} ({cls.name}) serves {', '.join(serves)} only, not {pt.name}."
                )
    values["item_settings"] = _item_settings(values, found, errors)
    return values, found


def _item_settings(values, module_rows, errors):
    """The cleaned item settings per module id, for the modules whose type declares
    ``item_fields``: given ones (``item_settings: {"<module id>": {...}}``), else what the
    item holds now; errors keyed ``item_settings.<module id>.<field>``."""
    given = values.pop("item_settings", None) or {}
    cleaned = {}
    for module in module_rows:
        cls = modules.get_type(module.type)
        if cls is None or not cls.item_fields:
            continue
        raw = given.get(str(module.id))
        if raw is None and values.get("internal_name"):
            raw = item_settings_for(module, values["internal_name"])
        if not isinstance(raw, dict):
            errors[f"item_settings.{module.id}"] = "Must be an object of settings."
            continue
        settings, problems = cls.validate_item(raw)
        for name, message in problems.items():
            errors[f"item_settings.{module.id}.{name}"] = message
        cleaned[module.id] = settings
    return cleaned


def create_tariff(data):
    errors = {}
    values, module_rows = _tariff_fields(data, errors)
    if errors:
        raise ValidationError(errors)
    item_settings = values.pop("item_settings")
    with unique_fields(), write_transaction():
        tariff = Tariff.create(**values)
        set_tariff_modules(tariff, module_rows, item_settings)
    return tariff


def update_tariff(tariff_id, data):
    tariff = get_tariff(tariff_id)
    errors = {}
    values, module_rows = _tariff_fields(data, errors)
    if (
        values.get("product_type") is not None
        and values["product_type"].id != tariff.product_type_id
    ) and tariff.services.count():
        errors["product_type"] = "The tariff has services; its product type cannot change."
    if errors:
        raise ValidationError(errors)
    item_settings = values.pop("item_settings")
    with unique_fields(), write_transaction():
        for key, value in values.items():
            setattr(tariff, key, value)
        tariff.save()
        set_tariff_modules(tariff, module_rows, item_settings)
    return tariff


def set_tariff_modules(tariff, module_rows, item_settings=None):
    """Link the tariff to these modules; a newly enabled link queues ensure_item (and so
    do changed item settings, ``{module id: settings}``)."""
    item_settings = item_settings or {}
    current = {tm.module_id for tm in TariffModule.select().where(TariffModule.tariff == tariff.id)}
    wanted = {m.id for m in module_rows}
    if current - wanted:
        TariffModule.delete().where(
            (TariffModule.tariff == tariff.id) & TariffModule.module.in_(current - wanted)
        ).execute()
    for module in module_rows:
        if module.id not in current:
            TariffModule.create(tariff=tariff, module=module)
        if module.enabled:
            ensure_item(module, tariff, item_settings.get(module.id))
        elif module.id in item_settings:
            _keep_item_settings(module, tariff, item_settings[module.id])


def _keep_item_settings(module, tariff, settings):
    """A disabled module's item settings are kept for when it is enabled."""
    item = Item.get_or_none(
        (Item.module == module.id) & (Item.internal_name == tariff.internal_name)
    )
    if item is not None:
        Item.update(settings=settings).where(Item.id == item.id).execute()


def archive_tariff(tariff_id, archived=True):
    tariff = get_tariff(tariff_id)
    with write_transaction():
        tariff.is_archived = archived
        tariff.save()
    return tariff


def delete_module(module_id):
    module = get_module(module_id)
    if module.services.count():
        raise Conflict("services use this module; disable it instead")
    with write_transaction():
        module.delete_instance()
