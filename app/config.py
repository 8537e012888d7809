"""Settings, read from the environment (every name below may be set as an env variable)."""

import os
import secrets

DEFAULTS = {
    # storage and broker
    "DATABASE_URL": None,  # default: sqlite:///<instance>/provisor.sqlite3
    "REDIS_URL": None,  # unset: in-process broker (embedded mode)
    "REDIS_NAMESPACE": "provisor",
    # security
    "SECRET_KEY": None,  # default: generated once and kept in <instance>/secret_key
    "PAYMENT_WEBHOOK_SECRET": None,  # default: generated and kept like SECRET_KEY
    "PAYMENT_WEBHOOK_TOLERANCE": 300,
    # mail
    "SMTP_URL": None,  # smtp://user:pass@host:port, smtps://..., smtp+starttls://...
    "MAIL_FROM": "Provisor <noreply@provisor.localhost>",
    "MAIL_RETRY_DELAY": 60,
    "MAIL_TIMEOUT": 10,
    # operations
    "LEASE_GRACE": 60,  # seconds a running attempt may exceed its module timeout
    "SWEEP_INTERVAL": 15,  # seconds between sweeps of the scheduler
    "SWEEP_GRACE": 10,  # a due operation not picked up for this long is re-sent
    "RECENT_ERROR_WINDOW": 900,  # module choice: errors in the last N seconds count
    "CALLBACK_TIMEOUT": 86400,  # http module: a pending operation waits this long
    "WORKER_THREADS": 4,  # embedded worker threads
    # tasks proxy
    "PROXY_PULL_INTERVAL": 300,  # seconds between pulls of a peer's events
    "PROXY_RETRY_DELAY": 10,  # seconds before a failed push is tried again
    "PROXY_TIMEOUT": 10,  # seconds a call to a peer may take
    # client area
    "SANDBOX_PAYMENTS": False,  # a "Pay now (sandbox)" button in the client area
    "ALLOW_REGISTRATION": True,
    "PAGE_SIZE": 25,
    # password hashing (argon2id); the defaults are argon2-cffi's own
    "ARGON2_TIME_COST": 3,
    "ARGON2_MEMORY_COST": 65536,
}

INT_KEYS = {
    "PAYMENT_WEBHOOK_TOLERANCE",
    "MAIL_RETRY_DELAY",
    "MAIL_TIMEOUT",
    "LEASE_GRACE",
    "SWEEP_INTERVAL",
    "SWEEP_GRACE",
    "RECENT_ERROR_WINDOW",
    "CALLBACK_TIMEOUT",
    "WORKER_THREADS",
    "PAGE_SIZE",
    "PROXY_PULL_INTERVAL",
    "PROXY_RETRY_DELAY",
    "PROXY_TIMEOUT",
    "ARGON2_TIME_COST",
    "ARGON2_MEMORY_COST",
}
BOOL_KEYS = {"SANDBOX_PAYMENTS", "ALLOW_REGISTRATION"}


def _parse(key, raw):
    if key in INT_KEYS:
        return int(raw)
    if key in BOOL_KEYS:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return raw


def from_environment(instance_path):
    """Defaults, overridden by ``PROVISOR_<KEY>`` or plain ``<KEY>`` environment variables."""
    config = dict(DEFAULTS)
    for key in DEFAULTS:
        for name in (f"PROVISOR_{key}", key):
            if os.environ.get(name) not in (None, ""):
                config[key] = _parse(key, os.environ[name])
                break
    if not config["DATABASE_URL"]:
        config["DATABASE_URL"] = "sqlite:///" + os.path.join(instance_path, "provisor.sqlite3")
    return config


def instance_secret(instance_path, name):
    """A random secret kept in the instance folder, made on first use."""
    os.makedirs(instance_path, exist_ok=True)
    path = os.path.join(instance_path, name)
    if os.path.exists(path):
        with open(path) as fh:
            return fh.read().strip()
    value = secrets.token_hex(32)
    with open(path, "w") as fh:
        fh.write(value)
    os.chmod(path, 0o600)
    return value
