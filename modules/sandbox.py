"""The sandbox module: a simulated panel built into Provisor.

For trying Provisor out and for benchmarks. It answers after ``latency_ms``, fails the
first ``fail_first`` attempts of each service operation (items are made at once), fails at random with ``failure_rate``
(permanently when ``permanent_failures`` is on), and fills plausible detail fields. Its
"panel" is a table keyed by the operation id, so a repeated attempt never creates a second
account.
"""

import hashlib
import random
import secrets
import time

from modules.base import ConfigField, ModuleType, PermanentError, Result, TemporaryError


class SandboxModule(ModuleType):
    id = "sandbox"
    name = "Sandbox (simulated panel)"
    description = "A built-in simulated control panel for trying Provisor out and for benchmarks."
    config_fields = [
        ConfigField("latency_ms", "Latency (ms)", kind="int", default=0, minimum=0, maximum=600000),
        ConfigField("fail_first", "Fail the first N attempts", kind="int", default=0, minimum=0),
        ConfigField(
            "failure_rate", "Failure rate (0..1)", kind="float", default=0.0, minimum=0, maximum=1
        ),
        ConfigField("permanent_failures", "Failures are permanent", kind="bool", default=False),
        ConfigField("panel_host", "Panel host name", default="panel.sandbox.test"),
    ]

    def timeout(self):
        return (self.config.get("latency_ms") or 0) / 1000.0 + 30.0

    def _simulate(self, ctx, failures=True):
        latency = (self.config.get("latency_ms") or 0) / 1000.0
        ctx.log(f"sandbox: {ctx.kind} key={ctx.idempotency_key} attempt={ctx.attempt_number}")
        if latency:
            time.sleep(latency)
        if not failures:
            return
        error_class = PermanentError if self.config.get("permanent_failures") else TemporaryError
        if ctx.attempt_number <= (self.config.get("fail_first") or 0):
            ctx.log("sandbox: simulated failure (fail_first)")
            raise error_class(f"sandbox: simulated failure of attempt {ctx.attempt_number}")
        rate = self.config.get("failure_rate") or 0.0
        if rate and random.random() < rate:
            ctx.log("sandbox: simulated failure (failure_rate)")
            raise error_class("sandbox: simulated random failure")

    def _create(self, ctx, kind, make_details):
        from app.models import SandboxResource

        existing = SandboxResource.get_or_none(SandboxResource.operation_key == ctx.idempotency_key)
        if existing is not None:
            ctx.log(f"sandbox: {kind} {existing.remote_id} already exists for this operation")
            return Result.done(existing.remote_id, existing.details)
        digest = hashlib.sha1(ctx.idempotency_key.encode()).hexdigest()
        remote_id = f"sbx-{kind}-{digest[:10]}"
        details = make_details(digest)
        SandboxResource.insert(
            operation_key=ctx.idempotency_key, kind=kind, remote_id=remote_id, details=details
        ).on_conflict_ignore().execute()
        row = SandboxResource.get(SandboxResource.operation_key == ctx.idempotency_key)
        ctx.log(f"sandbox: created {kind} {row.remote_id}")
        return Result.done(row.remote_id, row.details)

    def _details(self, ctx, digest):
        n = int(digest[:6], 16)
        ip = f"192.0.2.{n % 250 + 2}"
        user = f"u{ctx.service.id}" if ctx.service is not None else f"u{n % 100000}"
        host = self.config.get("panel_host") or "panel.sandbox.test"
        values = {
            "ip": ip,
            "username": user,
            "password": secrets.token_urlsafe(12),
            "panel_url": f"https://{host}/",
            "hostname": f"srv{n % 100000}.sandbox.test",
            "domain": (ctx.params.get("domain") or f"site{n % 100000}.sandbox.test"),
            "nameservers": "ns1.sandbox.test, ns2.sandbox.test",
            "common_name": ctx.params.get("domain") or f"site{n % 100000}.sandbox.test",
            "host": "db.sandbox.test",
            "database": f"db_{user}",
            "ipmi_url": f"https://ipmi.sandbox.test/{n % 1000}",
            "certificate_url": f"https://{host}/certs/{digest[:8]}.pem",
            "expires_on": "2027-12-31",
            "details": f"sandbox service {digest[:8]}",
        }
        fields = ctx.product_type.detail_fields if ctx.product_type is not None else []
        wanted = [f["name"] for f in fields] or ["ip", "username", "password", "panel_url"]
        return {name: values.get(name, f"{name}-{digest[:6]}") for name in wanted}

    def open(self, ctx):
        self._simulate(ctx)
        return self._create(ctx, "account", lambda digest: self._details(ctx, digest))

    def ensure_item(self, ctx):
        self._simulate(ctx, failures=False)  # simulated failures are for services only
        return self._create(ctx, "package", lambda digest: {"package": ctx.internal_name})

    def _change(self, ctx, what):
        self._simulate(ctx)
        ctx.log(f"sandbox: {what} {ctx.service.remote_id}")
        return Result.done(ctx.service.remote_id)

    def suspend(self, ctx):
        return self._change(ctx, "suspended")

    def resume(self, ctx):
        return self._change(ctx, "resumed")

    def close(self, ctx):
        return self._change(ctx, "deleted")

    def change_tariff(self, ctx):
        return self._change(ctx, f"moved to {ctx.params.get('tariff_internal_name')}")
