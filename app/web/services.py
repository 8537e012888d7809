"""Placeholder blueprint (being written)."""

from flask import Blueprint

bp = Blueprint("services", __name__)
