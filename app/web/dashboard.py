"""The staff dashboard: the landing page after a staff login."""

from flask import Blueprint, render_template
from flask_login import current_user

from app.auth import staff_required
from app.services import dashboard

bp = Blueprint("dashboard", __name__)


@bp.get("/dashboard")
@staff_required
def index():
    """What needs attention (each count links to its filtered list), and the first-run
    checklist until every step is done."""
    steps = dashboard.checklist()
    return render_template(
        "dashboard/index.html",
        counts=dashboard.attention(current_user._get_current_object()),
        steps=steps,
        setup_done=all(done for _, done in steps),
        stuck_hours=int(dashboard.STUCK_AFTER.total_seconds() // 3600),
    )
