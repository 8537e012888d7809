"""The sandbox module: a simulated panel built into Provisor.

For trying Provisor out and for benchmarks. It answers after ``latency_ms``, fails the
first ``fail_first`` attempts of each service operation (items are made at once), fails at
random with ``failure_rate`` (permanently when ``permanent_failures`` is on), and fills
plausible detail fields. With ``job_checks`` a new account is a long job: the operation
polls that many times before the account is ready. With ``expires_in_days`` services
expire and are renewed by the tariff's period (automatically ``renew_days_before`` days
before expiry when that is set).

Its "panel" is a table (``SandboxResource``) keyed by the operation id and the service,
so a repeated attempt takes over what an earlier one created instead of creating again.
"""

import datetime as dt
import hashlib
import random
import secrets
import time

from modules.base import (
    ConfigField,
    ModuleType,
    PermanentError,
    Result,
    TemporaryError,
    new_service_password,
)

PERIOD_DAYS = {"month": 30, "quarter": 91, "year": 365, "once": 3650}


def _find_query():
    from app.models import SandboxResource

    query = (
        SandboxResource.select()
        .where(SandboxResource.operation_key == "key")
        .order_by(SandboxResource.id)
    )
    return query, ["key"]


def _find_account_query():
    """This operation's row, and the service's accounts of other operations, by id. A
    UNION ALL of two lookups, each on its index: as one ``OR``, PostgreSQL's plan for the
    prepared statement, made while the table was nearly empty, read the whole table on
    every call as it grew (913 rows per activation in bench.activation)."""
    from app.models import SandboxResource

    mine = SandboxResource.select().where(SandboxResource.operation_key == "key")
    accounts = SandboxResource.select().where(
        (SandboxResource.service_id == -1)
        & (SandboxResource.kind == "account")
        & (SandboxResource.status != "deleted")
        & (SandboxResource.operation_key != "key")
    )
    query = mine.union_all(accounts).order_by(SandboxResource.id)
    return query, ["key", -1, "account", "deleted", "key"]


def _find_or_create_text(account):
    """PostgreSQL: :meth:`SandboxModule._create`'s lookup and, when it finds nothing, its
    INSERT, in one statement (one round trip to the "panel" instead of two). Its rows:
    this operation's row (rank 0), else the service's other accounts that are not deleted
    (rank 1, oldest first; ``account`` only), else the row it made (rank 2); none when
    another attempt of this operation inserted its row meanwhile (``ON CONFLICT``). Its
    parameters: the key, the service id, the key, then the new row's columns in the
    order of :data:`_NEW_COLUMNS`. Each lookup stays on its index (see
    :func:`_find_account_query`)."""
    from app.models import SandboxResource

    table = SandboxResource._meta.table_name
    columns = ", ".join(f'"{f.column_name}"' for f in SandboxResource._meta.sorted_fields)
    others = (
        f' UNION ALL SELECT {columns}, 1 AS "rank" FROM "{table}" WHERE "service_id" = %s'
        ' AND "kind" = \'account\' AND "status" <> \'deleted\' AND "operation_key" <> %s'
        if account
        else ""
    )
    new = ", ".join(f'"{name}"' for name in _NEW_COLUMNS)
    values = ", ".join(["%s"] * len(_NEW_COLUMNS))
    return (
        f'WITH "found" AS (SELECT {columns}, 0 AS "rank" FROM "{table}"'
        f' WHERE "operation_key" = %s{others}),'
        f' "made" AS (INSERT INTO "{table}" ({new}) SELECT {values}'
        ' WHERE NOT EXISTS (SELECT 1 FROM "found")'
        ' ON CONFLICT ("operation_key") DO NOTHING'
        f' RETURNING {columns}, 2 AS "rank")'
        ' SELECT * FROM "found" UNION ALL SELECT * FROM "made" ORDER BY "rank", "id"'
    )


#: the columns :func:`_find_or_create_text` inserts
_NEW_COLUMNS = (
    "operation_key",
    "kind",
    "remote_id",
    "details",
    "service_id",
    "status",
    "created_at",
)


def _find_or_create(ctx, row, for_service):
    """``(the row found or made, whether it was made)`` by :func:`_find_or_create_text`,
    ``(None, False)`` when another attempt inserted this operation's row meanwhile."""
    from app.db import execute_statement, statement_text
    from app.models import SandboxResource

    account = bool(for_service)
    text = statement_text(
        ("sandbox.find_or_create", account), lambda: _find_or_create_text(account)
    )
    key = row.operation_key
    params = [key, *((ctx.service.id, key) if account else ())]
    fields = SandboxResource._meta.fields
    params += [fields[name].db_value(getattr(row, name)) for name in _NEW_COLUMNS]
    found = execute_statement(text, params).fetchone()
    if found is None:
        return None, False
    return SandboxResource.from_row(found[:-1]), found[-1] == 2


class SandboxModule(ModuleType):
    id = "sandbox"
    name = "Sandbox (simulated panel)"
    description = "A built-in simulated control panel for trying Provisor out and for benchmarks."
    operations = frozenset(
        {
            "open",
            "suspend",
            "resume",
            "close",
            "change_tariff",
            "renew",
            "change_password",
            "ensure_item",
        }
    )
    config_fields = [
        ConfigField("latency_ms", "Latency (ms)", kind="int", default=0, minimum=0, maximum=600000),
        ConfigField("fail_first", "Fail the first N attempts", kind="int", default=0, minimum=0),
        ConfigField(
            "failure_rate", "Failure rate (0..1)", kind="float", default=0.0, minimum=0, maximum=1
        ),
        ConfigField("permanent_failures", "Failures are permanent", kind="bool", default=False),
        ConfigField("panel_host", "Panel host name", default="panel.sandbox.test"),
        ConfigField(
            "job_checks",
            "Checks before a new account is ready",
            kind="int",
            default=0,
            minimum=0,
            maximum=1000,
            help="0: accounts are ready at once; N: the open operation polls N times.",
        ),
        ConfigField(
            "expires_in_days",
            "Services expire after (days)",
            kind="int",
            default=0,
            minimum=0,
            maximum=3650,
            help="0: services do not expire.",
        ),
        ConfigField(
            "renew_days_before",
            "Renew automatically (days before expiry)",
            kind="int",
            default=0,
            minimum=0,
            maximum=365,
            help="0: only when staff ask.",
        ),
    ]

    @classmethod
    def validate_config(cls, data):
        cleaned, errors = super().validate_config(data)
        days, before = cleaned.get("expires_in_days"), cleaned.get("renew_days_before")
        if not errors and days and before and before >= days:
            # a renewal window as long as the term would renew every service at once
            errors["renew_days_before"] = (
                f"Must be less than the {days} days services last (or 0: only by hand)."
            )
        return cleaned, errors

    def timeout(self):
        return (self.config.get("latency_ms") or 0) / 1000.0 + 30.0

    def renew_days_before(self):
        return self.config.get("renew_days_before") or None

    def check_config(self):
        return (
            f"the simulated panel {self.config.get('panel_host') or 'panel.sandbox.test'} answers"
        )

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

    def _expiry(self, ctx, start=None):
        days = self.config.get("expires_in_days") or 0
        if not days:
            return None
        start = start or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        return start + dt.timedelta(days=days)

    def _find(self, ctx, kind):
        """What an earlier attempt made: by this operation, else this service's account
        (one query, its SQL text made once: a row of this operation is preferred, then
        the oldest)."""
        from app.db import cached_query_rows

        if kind == "account" and ctx.service is not None:
            key = ctx.idempotency_key
            params = (key, ctx.service.id, "account", "deleted", key)
            rows = cached_query_rows("sandbox.find_account", _find_account_query, params)
        else:
            rows = cached_query_rows("sandbox.find", _find_query, (ctx.idempotency_key,))
        for row in rows:
            if row.operation_key == ctx.idempotency_key:
                return row
        return rows[0] if rows else None

    def _create(self, ctx, kind, make_details, status="active"):
        """This operation's row (or, for an account, the service's): found and taken
        over, else created. On PostgreSQL both in one statement (the panel answers in one
        round trip: :func:`_find_or_create_text`), on SQLite the lookup then the INSERT."""
        from peewee import IntegrityError

        from app.db import is_sqlite
        from app.models import SandboxResource

        digest = hashlib.sha1(ctx.idempotency_key.encode()).hexdigest()
        row = SandboxResource(
            operation_key=ctx.idempotency_key,
            kind=kind,
            remote_id=f"sbx-{kind}-{digest[:10]}",
            details=make_details(digest),
            service_id=ctx.service.id if ctx.service is not None else None,
            status=status,
        )
        if is_sqlite():
            existing, made = self._find(ctx, kind), False
            if existing is None:
                try:
                    row.save(force_insert=True)  # outside any transaction: the call to a panel
                    existing, made = row, True
                except IntegrityError:  # another attempt of this operation made it meanwhile
                    pass
        else:
            for_service = kind == "account" and ctx.service is not None
            existing, made = _find_or_create(ctx, row, for_service)
        if existing is None:  # another attempt of this operation made it meanwhile: taken over
            existing = SandboxResource.get(SandboxResource.operation_key == row.operation_key)
        if made:
            ctx.log(f"sandbox: created {kind} {existing.remote_id}")
        elif existing.operation_key == ctx.idempotency_key and ctx.state:
            ctx.log(f"sandbox: checking {kind} {existing.remote_id}")
        else:
            ctx.log(f"sandbox: {kind} {existing.remote_id} already exists: taking it over")
        return existing

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
            "hostname": ctx.params.get("hostname") or f"srv{n % 100000}.sandbox.test",
            "domain": (ctx.params.get("domain") or f"site{n % 100000}.sandbox.test"),
            "nameservers": "ns1.sandbox.test, ns2.sandbox.test",
            "common_name": ctx.params.get("domain") or f"site{n % 100000}.sandbox.test",
            "host": "db.sandbox.test",
            "port": "3306",
            "database": f"{ctx.params.get('prefix') or 'db'}_{user}",
            "ipmi_url": f"https://ipmi.sandbox.test/{n % 1000}",
            "certificate_url": f"https://{host}/certs/{digest[:8]}.pem",
            "expires_on": "2027-12-31",
            "details": f"sandbox service {digest[:8]}",
        }
        fields = ctx.product_type.detail_fields if ctx.product_type is not None else []
        wanted = [f["name"] for f in fields] or ["ip", "username", "password", "panel_url"]
        return {name: values.get(name, f"{name}-{digest[:6]}") for name in wanted}

    def list_accounts(self):
        """The sandbox panel's accounts that are not deleted (any sandbox module's)."""
        from app.models import SandboxResource

        rows = (
            SandboxResource.select()
            .where((SandboxResource.kind == "account") & (SandboxResource.status != "deleted"))
            .order_by(SandboxResource.id)
        )
        return [
            {
                "remote_id": row.remote_id,
                "summary": ", ".join(
                    str(v)
                    for k, v in (row.details or {}).items()
                    if k in ("username", "ip", "domain", "hostname") and v
                )
                or row.status,
                "details": dict(row.details or {}),
            }
            for row in rows
        ]

    def open(self, ctx):
        from app.models import SandboxResource

        self._simulate(ctx)
        checks = self.config.get("job_checks") or 0
        row = self._create(
            ctx,
            "account",
            lambda digest: self._details(ctx, digest),
            status="creating" if checks else "active",
        )
        if row.status == "creating":
            left = ctx.state.get("checks_left", checks)
            if left > 0:
                checks_left = f"{left} check{'s' if left != 1 else ''} left"
                ctx.log(f"sandbox: account {row.remote_id} is being created ({checks_left})")
                return Result.poll(
                    after=1, state={"account": row.remote_id, "checks_left": left - 1}
                )
            SandboxResource.update(status="active").where(
                SandboxResource.operation_key == row.operation_key
            ).execute()
            ctx.log(f"sandbox: account {row.remote_id} is ready")
        return Result.done(
            row.remote_id,
            row.details,
            data={"sandbox_account": row.remote_id},
            expires_at=self._expiry(ctx),
        )

    def ensure_item(self, ctx):
        self._simulate(ctx, failures=False)  # simulated failures are for services only
        row = self._create(ctx, "package", lambda digest: {"package": ctx.internal_name})
        return Result.done(row.remote_id, row.details)

    def _account(self, ctx):
        from app.models import SandboxResource

        row = SandboxResource.get_or_none(
            (SandboxResource.remote_id == (ctx.service.remote_id or ""))
            & (SandboxResource.kind == "account")
        )
        if row is None:
            raise PermanentError(f"sandbox: no account {ctx.service.remote_id!r} on the panel")
        return row

    def _change(self, ctx, what, status=None, **changes):
        from app.models import SandboxResource

        self._simulate(ctx)
        row = self._account(ctx)
        if status is not None:
            changes["status"] = status
        if changes:
            SandboxResource.update(**changes).where(SandboxResource.id == row.id).execute()
        ctx.log(f"sandbox: {what} {ctx.service.remote_id}")
        return Result.done(ctx.service.remote_id)

    def suspend(self, ctx):
        reason = ctx.params.get("reason")
        if reason:
            ctx.log(f"sandbox: suspension reason: {reason}")
        return self._change(ctx, "suspended", status="suspended")

    def resume(self, ctx):
        return self._change(ctx, "resumed", status="active")

    def close(self, ctx):
        return self._change(ctx, "deleted", status="deleted")

    def change_tariff(self, ctx):
        name = ctx.params.get("tariff_internal_name")
        row = self._account(ctx)
        return self._change(
            ctx, f"moved to {name}", details={**(row.details or {}), "package": name}
        )

    def change_password(self, ctx):
        password = new_service_password(ctx)
        row = self._account(ctx)
        return self._change(
            ctx, "new password set for", details={**(row.details or {}), "password": password}
        )

    def renew(self, ctx):
        self._simulate(ctx)
        self._account(ctx)
        current = ctx.service.expires_at
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        days = PERIOD_DAYS.get(ctx.tariff.period if ctx.tariff is not None else "", 30)
        expires = max(current or now, now) + dt.timedelta(days=days)
        ctx.log(f"sandbox: renewed {ctx.service.remote_id} until {expires:%Y-%m-%d}")
        return Result.done(ctx.service.remote_id, expires_at=expires)
