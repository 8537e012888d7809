"""What the two floors (``bench/floor_actors.py``, ``bench/floor_sqlite.py``) make alike:
the simulated panel's account, the attempt's log and the welcome email's text."""

import hashlib
import os
import secrets
import socket

WORKER = f"{socket.gethostname()}:{os.getpid()}"

BODY = """Hello {name},

your {tariff} is ready.

IP: {ip}
Username: {username}
Password: {password}
Panel: {panel_url}
"""


def account(operation_id, service_id):
    """``(key, remote_id, details)`` of the panel account the operation makes (the key and
    the name derived from the operation, as the sandbox module derives them)."""
    key = str(operation_id)
    digest = hashlib.sha256(key.encode()).hexdigest()
    details = {
        "ip": f"192.0.2.{int(digest[:6], 16) % 250 + 2}",
        "username": f"u{service_id}",
        "password": secrets.token_urlsafe(12),
        "panel_url": "https://panel.sandbox.test/",
    }
    return key, f"sbx-account-{digest[:10]}", details


def attempt_log(key, number, remote_id):
    return f"sandbox: open key={key} attempt={number}\nsandbox: created account {remote_id}"


def welcome(service_id, client_name, tariff, details):
    """``(subject, body)`` of the welcome email."""
    subject = f"Your {tariff} is ready (service #{service_id})"
    return subject, BODY.format(name=client_name, tariff=tariff, **details)
