"""Staff management (admins): staff members and admins, their roles and departments."""

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app.auth import admin_required, restamp_session
from app.services import accounts, catalog
from app.services.errors import ValidationError

bp = Blueprint("staff", __name__, url_prefix="/staff")

ROLES = (
    ("staff", "Staff: works on the tasks of their departments"),
    ("admin", "Admin: configures everything, sees every task"),
)


@bp.get("")
@admin_required
def index():
    """Staff members and admins with their departments, role and whether they may log in."""
    names = {d.id: d.name for d in catalog.departments()}
    rows = [
        {"user": u, "departments": sorted(names[i] for i in accounts.department_ids_of(u))}
        for u in accounts.staff()
    ]
    return render_template("staff/index.html", rows=rows)


def _form_page(user, form, errors):
    return render_template(
        "staff/form.html",
        user=user,
        form=form,
        errors=errors,
        roles=ROLES,
        departments=catalog.departments(),
    ), (422 if errors else 200)


@bp.route("/new", methods=["GET", "POST"])
@admin_required
def new():
    """Add a staff member (or an admin) with a password and their departments."""
    if request.method == "GET":
        return _form_page(None, {"role": "staff", "department_ids": []}, {})
    form = {
        "email": request.form.get("email", ""),
        "name": request.form.get("name", ""),
        "role": request.form.get("role", ""),
        "department_ids": request.form.getlist("department_ids"),
    }
    try:
        user = accounts.create_user(
            {**form, "password": request.form.get("password", "")}, role=form["role"]
        )
    except ValidationError as exc:
        return _form_page(None, form, exc.fields)
    flash(f"{user.name} <{user.email}> can log in now.", "success")
    return redirect(url_for("staff.index"))


@bp.route("/<int:user_id>/edit", methods=["GET", "POST"])
@admin_required
def edit(user_id):
    """Change a staff member: name, role, departments, active; a new password if given."""
    user = accounts.get_user(user_id)
    if request.method == "GET":
        form = {
            "name": user.name,
            "role": user.role,
            "department_ids": [str(i) for i in accounts.department_ids_of(user)],
            "is_active": user.is_active,
        }
        return _form_page(user, form, {})
    form = {
        "name": request.form.get("name", ""),
        "role": request.form.get("role", ""),
        "department_ids": request.form.getlist("department_ids"),
        "is_active": "is_active" in request.form,
    }
    data = {**form, "password": request.form.get("password", "")}
    try:
        user = accounts.update_user(user_id, data, actor=current_user._get_current_object())
    except ValidationError as exc:
        return _form_page(user, form, exc.fields)
    if user.id == current_user.id:  # a new password of one's own: this session goes on
        restamp_session(user)
    flash(f"{form['name'].strip()} saved.", "success")
    return redirect(url_for("staff.index"))
