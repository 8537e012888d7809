"""Partial or page: decided from htmx-flask's ``request.htmx`` (a boosted navigation is a
navigation, it gets the whole page); anonymous htmx requests are redirected by htmx."""

from tests.support import ADMIN, HTMX, html, login

LIVE = {**HTMX, "HX-Target": "operations-live"}


def test_partial_for_htmx_page_for_a_boosted_navigation(client, admin):
    partial = html(client.get("/operations", headers=LIVE))
    assert "<!doctype html>" not in partial.lower() and 'class="counts"' in partial
    assert 'id="operations-live"' not in partial  # the rows, not their container
    boosted = html(client.get("/operations", headers={**LIVE, "HX-Boosted": "true"}))
    assert "<!doctype html>" in boosted.lower() and 'id="operations-live"' in boosted
    plain = html(client.get("/operations", headers={"HX-Target": "operations-live"}))
    assert "<!doctype html>" in plain.lower()  # no HX-Request: not htmx


def test_anonymous_boosted_navigation_gets_hx_redirect(client):
    response = client.get("/operations", headers={**HTMX, "HX-Boosted": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login?next=")
    assert client.get("/operations").status_code == 302  # no htmx: a plain redirect


def test_user_model_speaks_flask_login(app, client, api):
    """app.models.User is a flask_login.UserMixin; equality and hashing stay peewee's."""
    from flask_login import UserMixin

    from app.db import database
    from app.models import User

    with app.app_context(), database.connection_context():
        first = User.get(User.email == ADMIN[0])
        again = User.get_by_id(first.id)
        assert isinstance(first, UserMixin)
        assert first.is_authenticated and not first.is_anonymous and first.is_active
        assert first.get_id() == str(first.id)
        assert first == again and len({first, again}) == 1
        assert first.is_admin and first.is_staff
    login(client, *ADMIN)
    assert client.get("/operations").status_code == 200
