"""The front door: send each visitor to their own start page."""

from flask import Blueprint, redirect, url_for
from flask_login import current_user

bp = Blueprint("home", __name__)


@bp.get("/")
def index():
    """Staff and admins start at the dashboard, clients at My services."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    if current_user.is_staff:
        return redirect(url_for("dashboard.index"))
    return redirect(url_for("my.index"))
