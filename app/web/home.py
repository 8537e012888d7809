"""Placeholder blueprint (being written)."""

from flask import Blueprint

bp = Blueprint("home", __name__)
