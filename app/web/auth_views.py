"""Placeholder blueprint (being written)."""

from flask import Blueprint

bp = Blueprint("auth_views", __name__)
