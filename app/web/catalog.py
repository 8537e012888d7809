"""The catalog (admins): tariff plans, processing modules, product types, departments."""

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.auth import admin_required
from app.services import accounts, catalog, order_fields
from app.services.errors import ValidationError

bp = Blueprint("catalog", __name__, url_prefix="/catalog")

MODULE_FIELDS = (
    "name",
    "department_id",
    "retry_delay",
    "max_attempts",
    "max_wait",
    "max_running",
    "priority",
)
TARIFF_FIELDS = ("name", "product_type", "price", "currency", "period", "internal_name")


@bp.get("")
@admin_required
def index():
    """The catalog starts with its tariff plans."""
    return redirect(url_for("catalog.tariffs"))


# --- tariffs ----------------------------------------------------------------------------


@bp.get("/tariffs")
@admin_required
def tariffs():
    """Tariff plans with their modules, whether they can be ordered and their items."""
    rows = [
        {
            "tariff": t,
            "modules": catalog.tariff_modules(t),
            "orderable": catalog.is_orderable(t),
            "items": catalog.items_for(t),
        }
        for t in catalog.tariffs(include_archived=True)
    ]
    return render_template("catalog/tariffs.html", rows=rows)


def _tariff_form_page(tariff, form, errors):
    return render_template(
        "catalog/tariff_form.html",
        tariff=tariff,
        form=form,
        errors=errors,
        product_types=catalog.product_types(),
        modules=catalog.processing_modules(),
        types=catalog.module_types(),
        periods=catalog.PERIODS,
    ), (422 if errors else 200)


def _tariff_data():
    data = {name: request.form.get(name, "") for name in TARIFF_FIELDS}
    data["module_ids"] = request.form.getlist("module_ids")
    # the item settings of each module whose type declares item_fields, as the form sent them
    settings = {}
    types = catalog.module_types()
    for module in catalog.processing_modules():
        cls = types.get(module.type)
        prefix = f"item_settings.{module.id}."
        if cls is None or not cls.item_fields:
            continue
        if not any(key.startswith(prefix) for key in request.form):
            continue
        settings[str(module.id)] = {
            f.name: (prefix + f.name in request.form)
            if f.kind == "bool"
            else request.form.get(prefix + f.name)
            for f in cls.item_fields
        }
    data["item_settings"] = settings
    return data


def _form_item_settings(tariff):
    """The form's item settings fields of an existing tariff: what its items hold."""
    values = {}
    types = catalog.module_types()
    for module in catalog.tariff_modules(tariff):
        cls = types.get(module.type)
        if cls is None or not cls.item_fields:
            continue
        held = catalog.item_settings_for(module, tariff.internal_name)
        for f in cls.item_fields:
            values[f"item_settings.{module.id}.{f.name}"] = held.get(f.name, f.default)
    return values


@bp.route("/tariffs/new", methods=["GET", "POST"])
@admin_required
def tariff_new():
    """Create a tariff plan; linking enabled modules makes Provisor create their items."""
    if request.method == "GET":
        return _tariff_form_page(None, {"currency": "USD", "period": "month"}, {})
    data = _tariff_data()
    try:
        tariff = catalog.create_tariff(data)
    except ValidationError as exc:
        return _tariff_form_page(None, request.form, exc.fields)  # as typed, item settings too
    flash(f"Tariff {tariff.name} created.", "success")
    return redirect(url_for("catalog.tariffs"))


@bp.route("/tariffs/<int:tariff_id>/edit", methods=["GET", "POST"])
@admin_required
def tariff_edit(tariff_id):
    """Change a tariff plan and the modules that serve it."""
    tariff = catalog.get_tariff(tariff_id)
    if request.method == "GET":
        form = {
            "name": tariff.name,
            "product_type": tariff.product_type.code,
            "price": str(tariff.price),
            "currency": tariff.currency,
            "period": tariff.period,
            "internal_name": tariff.internal_name,
            "module_ids": [str(m.id) for m in catalog.tariff_modules(tariff)],
            **_form_item_settings(tariff),
        }
        return _tariff_form_page(tariff, form, {})
    data = _tariff_data()
    try:
        catalog.update_tariff(tariff_id, data)
    except ValidationError as exc:
        return _tariff_form_page(tariff, request.form, exc.fields)
    flash(f"Tariff {data['name']} saved.", "success")
    return redirect(url_for("catalog.tariffs"))


@bp.post("/items/<int:item_id>/ready")
@admin_required
def item_ready(item_id):
    """A person created the item by hand on the panel: mark it ready."""
    item = catalog.mark_item_ready(
        item_id, remote_id=request.form.get("remote_id") or None, actor=current_user.email
    )
    flash(f"Item {item.internal_name} is ready.", "success")
    return redirect(url_for("catalog.tariffs"))


# --- processing modules -----------------------------------------------------------------


@bp.get("/modules")
@admin_required
def modules():
    """Processing modules: type, department, retry settings, enabled."""
    return render_template(
        "catalog/modules.html",
        modules=catalog.processing_modules(),
        types=catalog.module_types(),
    )


def _module_data(module_type):
    """The dict ``create_module``/``update_module`` take, from the form."""
    data = {name: request.form.get(name, "") for name in MODULE_FIELDS}
    if "department_id" not in request.form:
        del data["department_id"]  # not on the form: the module's, or the default one
    data["type"] = request.form.get("type", "")
    data["enabled"] = "enabled" in request.form
    config = {}
    for field in module_type.config_fields if module_type else ():
        key = f"config.{field.name}"
        config[field.name] = key in request.form if field.kind == "bool" else request.form.get(key)
    data["config"] = config
    return data


def _shown_config(module_type, config):
    """Config values to show in a form: secrets are never shown back."""
    if module_type is None:
        return {}
    secrets = {f.name for f in module_type.config_fields if f.kind == "secret"}
    return {k: ("" if k in secrets else v) for k, v in (config or {}).items()}


def _module_form_page(module, form, errors):
    types = catalog.module_types()
    module_type = types.get(module.type if module else form.get("type"))
    return render_template(
        "catalog/module_form.html",
        module=module,
        form=form,
        config_values=_shown_config(module_type, form.get("config")),
        errors=errors,
        types=types,
        module_type=module_type,
        departments=catalog.departments(),
        default_department=catalog.DEFAULT_DEPARTMENT,
    ), (422 if errors else 200)


@bp.route("/modules/new", methods=["GET", "POST"])
@admin_required
def module_new():
    """Configure a processing module; its settings follow the chosen type."""
    if request.method == "GET":
        return _module_form_page(
            None, {"type": request.args.get("type", ""), "enabled": True, "config": {}}, {}
        )
    module_type = catalog.module_types().get(request.form.get("type", ""))
    data = _module_data(module_type)
    try:
        module = catalog.create_module(data)
    except ValidationError as exc:
        return _module_form_page(None, data, exc.fields)
    _flash_saved(module, "created")
    return redirect(url_for("catalog.modules"))


def _flash_saved(module, verb):
    """Saving tests the connection too; a failing test is told at once but does not
    block saving (the server may be down for a while)."""
    module_type = catalog.module_types().get(module.type)
    if module_type is None or not module_type.can_check():
        flash(f"Module {module.name} {verb}.", "success")
        return
    check = catalog.check_module(module.id)
    if check["ok"]:
        flash(f"Module {module.name} {verb}. {check['message']}", "success")
    else:
        where = "; ".join(f"{k.removeprefix('config.')}: {v}" for k, v in check["fields"].items())
        flash(
            f"Module {module.name} {verb}, but the connection test failed: "
            f"{where or check['message']}",
            "error",
        )


@bp.route("/modules/<int:module_id>/edit", methods=["GET", "POST"])
@admin_required
def module_edit(module_id):
    """Change a module; a secret left blank keeps the stored one."""
    module = catalog.get_module(module_id)
    if request.method == "GET":
        form = {
            "name": module.name,
            "type": module.type,
            "department_id": module.department_id or "",
            "retry_delay": module.retry_delay,
            "max_attempts": module.max_attempts,
            "max_wait": module.max_wait,
            "max_running": module.max_running,
            "priority": module.priority,
            "enabled": module.enabled,
            "config": module.config or {},
        }
        return _module_form_page(module, form, {})
    data = _module_data(catalog.module_types().get(module.type))
    try:
        module = catalog.update_module(module_id, data)
    except ValidationError as exc:
        return _module_form_page(module, {**data, "type": module.type}, exc.fields)
    _flash_saved(module, "saved")
    return redirect(url_for("catalog.modules"))


@bp.post("/modules/check")
@admin_required
def module_check_new():
    """Test connection with the settings typed into the new-module form (nothing saved)."""
    module_type = catalog.module_types().get(request.form.get("type", ""))
    return _check_answer(module_type, catalog.check_form(_module_data(module_type)))


@bp.post("/modules/<int:module_id>/check")
@admin_required
def module_check(module_id):
    """Test connection with the form's settings of a saved module (a blank secret is the
    stored one); nothing is saved."""
    module = catalog.get_module(module_id)
    module_type = catalog.module_types().get(module.type)
    data = {**_module_data(module_type), "type": module.type}
    return _check_answer(module_type, catalog.check_form(data, existing=module))


def _check_answer(module_type, check):
    return render_template("catalog/_check_result.html", check=check, module_type=module_type)


@bp.get("/modules/config-fields")
@admin_required
def module_config_fields():
    """The settings fieldset of one module type (swapped in when the type changes)."""
    module_type = catalog.module_types().get(request.args.get("type", ""))
    defaults = {f.name: f.default for f in module_type.config_fields} if module_type else {}
    return render_template(
        "catalog/_config_fields.html",
        module_type=module_type,
        module=None,
        config_values=_shown_config(module_type, defaults),
        errors={},
    )


# --- product types ----------------------------------------------------------------------


@bp.get("/product-types")
@admin_required
def product_types():
    """Product types and the detail fields their services carry."""
    return render_template("catalog/product_types.html", product_types=catalog.product_types())


@bp.route("/product-types/<int:product_type_id>/edit", methods=["GET", "POST"])
@admin_required
def product_type_edit(product_type_id):
    """Change a product type's name, detail fields and welcome email."""
    product_type = catalog.product_type_by(product_type_id)
    if product_type is None:
        abort(404)
    errors = {}
    if request.method == "POST":
        form = {
            name: request.form.get(name, "")
            for name in (
                "name",
                "detail_fields",
                "order_fields",
                "welcome_subject",
                "welcome_template",
            )
        }
        try:
            catalog.update_product_type(product_type_id, form)
        except ValidationError as exc:
            errors = exc.fields
        else:
            flash(f"Product type {form['name']} saved.", "success")
            return redirect(url_for("catalog.product_types"))
    else:
        form = {
            "name": product_type.name,
            "detail_fields": catalog.format_detail_fields(product_type.detail_fields),
            "order_fields": order_fields.format_lines(product_type.order_fields),
            "welcome_subject": product_type.welcome_subject,
            "welcome_template": product_type.welcome_template,
        }
    return render_template(
        "catalog/product_type_form.html", product_type=product_type, form=form, errors=errors
    ), (422 if errors else 200)


# --- departments ------------------------------------------------------------------------


@bp.route("/departments", methods=["GET", "POST"])
@admin_required
def departments():
    """Departments (who does the manual tasks of a module) and a form to add one."""
    form = {"name": "", "notify_email": ""}
    errors = {}
    if request.method == "POST":
        form = {k: request.form.get(k, "") for k in form}
        try:
            department = catalog.create_department(form)
        except ValidationError as exc:
            errors = exc.fields
        else:
            flash(f"Department {department.name} created.", "success")
            return redirect(url_for("catalog.departments"))
    return render_template(
        "catalog/departments.html",
        departments=catalog.departments(),
        members=_members(),
        form=form,
        errors=errors,
    ), (422 if errors else 200)


def _members():
    """Department id → the names of its staff."""
    members = {}
    for user in accounts.staff():
        for department_id in accounts.department_ids_of(user):
            members.setdefault(department_id, []).append(user.name)
    return members


@bp.route("/departments/<int:department_id>/edit", methods=["GET", "POST"])
@admin_required
def department_edit(department_id):
    """Rename a department or change the address that gets an email on each new task."""
    department = catalog.get_department(department_id)
    errors = {}
    if request.method == "POST":
        form = {k: request.form.get(k, "") for k in ("name", "notify_email")}
        try:
            catalog.update_department(department_id, form)
        except ValidationError as exc:
            errors = exc.fields
        else:
            flash(f"Department {form['name'].strip()} saved.", "success")
            return redirect(url_for("catalog.departments"))
    else:
        form = {"name": department.name, "notify_email": department.notify_email or ""}
    return render_template(
        "catalog/department_form.html", department=department, form=form, errors=errors
    ), (422 if errors else 200)


@bp.app_template_global()
def module_choices(capability):
    """``[(id, label)]`` of the modules a setting with ``module_with`` may name."""
    return [
        (m.id, f"{m.name} (#{m.id}, {m.type}{'' if m.enabled else ', disabled'})")
        for m in catalog.modules_with(capability)
    ]
