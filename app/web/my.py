"""Placeholder blueprint (being written)."""

from flask import Blueprint

bp = Blueprint("my", __name__)
