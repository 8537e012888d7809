"""Reselling an upstream provider's services: a module whose "panel" is another Provisor.

The upstream made this Provisor a **reseller paying on account** (``provisor clients
reseller --client-id N`` there prints the token). Each local tariff's item names the
upstream tariff it resells (``upstream_tariff_id``); ``ensure_item`` checks the upstream
offers it to this reseller.

- ``open`` orders the upstream tariff (``POST /api/v1/reseller/orders``, paid on account)
  with an idempotency key derived from the local operation, then follows the upstream
  service with ``Result.poll`` (no worker is held while the upstream works, however long,
  its people included) until it is active, and copies its details: the fields the local
  product type declares, matched by name (all of them for a product type that declares
  none). A retry after a crash sends the same key: the upstream answers with the order it
  already made, never a second one.
- ``suspend``, ``resume``, ``close``, ``change_tariff`` (to the new tariff's upstream
  tariff) and ``renew`` ask the upstream service for the same operation
  (``POST /api/v1/reseller/services/<id>/<kind>``, same idempotency rule) and poll it until
  it is done there.

Errors: the upstream unreachable, a timeout, a 5xx (or 429) are temporary; a refusal
(4xx: a tariff it does not sell, a token it does not take) is permanent, with the
upstream's own message. Every call is in the attempt log, the token masked, the upstream's
secret details too. Redirects are not followed, at most 1 MiB of an answer is read, and the
URL must pass ``OUTBOUND_ALLOWED_NETWORKS`` / ``OUTBOUND_DENIED_NETWORKS``.
"""

import json

import requests

from app import outbound
from modules.base import (
    ConfigField,
    ConfigProblem,
    ModuleType,
    PermanentError,
    Result,
    TemporaryError,
)
from modules.http import why

API = "/api/v1/reseller"
MAX_LOGGED = 2000
TERMINAL_DOWN = ("deleted", "cancelled")


class Refused(PermanentError):
    """The upstream refused (a 4xx): ``status`` and its message."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def _short(text):
    return text if len(text) <= MAX_LOGGED else text[:MAX_LOGGED] + "... (cut)"


class ProvisorModule(ModuleType):
    id = "provisor"
    name = "Upstream Provisor (reselling)"
    description = (
        "Resells an upstream provider's services: orders them from another Provisor, "
        "paid on the reseller's account there, and forwards every operation."
    )
    operations = frozenset(
        {"open", "suspend", "resume", "close", "change_tariff", "renew", "ensure_item"}
    )
    client_data = ()
    config_fields = [
        ConfigField(
            "url",
            "Upstream URL",
            kind="url",
            required=True,
            help="Where the upstream Provisor runs, e.g. https://upstream.example.",
        ),
        ConfigField(
            "token",
            "Reseller token",
            kind="secret",
            required=True,
            help="The upstream's `provisor clients reseller --client-id N` printed it.",
        ),
        ConfigField(
            "timeout",
            "Timeout (s)",
            kind="float",
            default=15.0,
            minimum=1,
            maximum=300,
            help="For each call to the upstream.",
        ),
        ConfigField(
            "poll_interval",
            "Check every (s)",
            kind="float",
            default=10.0,
            minimum=0.2,
            maximum=3600,
            help="How often the upstream service is checked while it is being set up.",
        ),
    ]
    item_fields = [
        ConfigField(
            "upstream_tariff_id",
            "Upstream tariff id",
            kind="int",
            required=True,
            minimum=1,
            help="The upstream's tariff this tariff resells (GET /api/v1/reseller/tariffs "
            "there lists them).",
        ),
    ]
    CALLS_PER_ATTEMPT = 2

    # --- settings -------------------------------------------------------------------------

    def call_timeout(self):
        return float(self.config.get("timeout") or 15.0)

    def timeout(self):
        return self.call_timeout() * self.CALLS_PER_ATTEMPT + 5

    def io_timeout(self):
        return self.call_timeout()

    def _poll(self, state):
        return Result.poll(after=float(self.config.get("poll_interval") or 10.0), state=state)

    def _url(self, path):
        return self.config["url"].rstrip("/") + API + path

    # --- one call -------------------------------------------------------------------------

    def _send(self, method, path, body=None):
        """One request to the upstream; returns ``(reply, data)``. Raises
        ``outbound.Refused``, ``requests`` errors, or ``ValueError`` for an answer past
        the cap."""
        url = self._url(path)
        outbound.check(url)
        reply = requests.request(
            method,
            url,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.config['token']}",
                "Content-Type": "application/json",
                "User-Agent": "Provisor (reseller)",
            },
            timeout=self.call_timeout(),
            allow_redirects=False,
            stream=True,
        )
        content = outbound.read_capped(reply)
        if content is None:
            raise ValueError(f"the upstream's answer is larger than {outbound.MAX_REPLY} bytes")
        reply._content = content
        try:
            data = reply.json()
        except ValueError:
            data = None
        return reply, data

    def _request(self, ctx, method, path, body=None):
        """A call logged in the attempt log; the answer's JSON, or the error it means."""
        url = self._url(path)
        with ctx.call(method, url) as call:
            if body is not None:
                call.note(_short(json.dumps(body, sort_keys=True)))
            try:
                reply, data = self._send(method, path, body)
            except outbound.Refused as exc:
                call.outcome = "refused by Provisor"
                raise PermanentError(f"not calling {url}: {exc.message}") from None
            except ValueError as exc:
                call.outcome = str(exc)
                raise PermanentError(str(exc)) from None
            except requests.Timeout:
                call.outcome = f"timeout after {self.call_timeout():g} s"
                raise TemporaryError(
                    f"the upstream did not answer within {self.call_timeout():g} s ({url})"
                ) from None
            except requests.RequestException as exc:
                call.outcome = f"connection error: {why(exc)}"
                raise TemporaryError(f"cannot reach the upstream at {url}: {why(exc)}") from None
            call.outcome = f"{reply.status_code} {reply.reason}"
        if data is not None:
            ctx.secrets_in(data)  # the upstream's passwords never reach the log
        ctx.log(f"  {_short(reply.text)}")
        return self._judge(reply, data, url)

    @staticmethod
    def _judge(reply, data, url):
        status = reply.status_code
        said = _message(data) or " ".join(reply.text.split())[:300] or reply.reason
        if 300 <= status < 400:
            raise PermanentError(
                f"the upstream answered {status} redirecting to "
                f"{reply.headers.get('Location') or '(nowhere)'}: Provisor does not follow "
                "redirects; set the module's URL to where it points"
            )
        if status >= 500 or status == 429:
            raise TemporaryError(f"the upstream answered {status}: {said}")
        if status == 409 and _code(data) == "operation_in_progress":
            # the upstream service is busy with another operation (its own staff's, say):
            # not a refusal, this one can go through once that ends
            raise TemporaryError(f"the upstream is busy ({status}): {said}")
        if status >= 400:
            raise Refused(f"the upstream refused ({status}): {said}", status)
        if not isinstance(data, dict):
            raise TemporaryError(f"the upstream's answer from {url} is not a JSON object")
        return data

    # --- open -----------------------------------------------------------------------------

    def _key(self, ctx):
        """The idempotency key of this operation at the upstream: its id and the moment it
        was made (a reinstalled Provisor's operation 1 is not the old one's)."""
        made = ctx.operation.created_at
        stamp = made.strftime("%Y%m%dT%H%M%S%f") if made is not None else "0"
        return f"op-{ctx.operation.id}-{stamp}"

    def _upstream_tariff(self, ctx):
        settings = ctx.item_settings
        if not settings and ctx.item is not None:
            settings = ctx.item.settings
        tariff_id = (settings or {}).get("upstream_tariff_id")
        if not tariff_id:
            raise PermanentError(
                "the tariff's item has no upstream tariff id (edit the tariff: "
                f"{self.item_fields[0].label})"
            )
        return int(tariff_id)

    def open(self, ctx):
        state = dict(ctx.state)
        upstream_id = state.get("upstream_service_id")
        if upstream_id is None:
            key = self._key(ctx)
            order = self._request(
                ctx,
                "POST",
                "/orders",
                {
                    "tariff_id": self._upstream_tariff(ctx),
                    "params": dict((ctx.service.params or {}) if ctx.service else {}),
                    "idempotency_key": key,
                },
            )
            upstream_id = order.get("service_id")
            if not isinstance(upstream_id, int):
                raise TemporaryError("the upstream's order answer has no service_id")
            state = {"upstream_service_id": upstream_id, "upstream_order_id": order["order_id"]}
            ctx.save_state(state)
            ctx.log(
                f"upstream order {order['order_id']} (key {key}"
                f"{', made before: taken over' if order.get('replayed') else ''}): "
                f"service {upstream_id}"
            )
        service = self._service(ctx, upstream_id)
        status = service.get("status")
        if status == "active":
            details = self._details(ctx, service.get("details") or {})
            return Result.done(
                remote_id=upstream_id,
                details=details,
                data={"upstream_service_id": upstream_id},
                expires_at=service.get("expires_at"),
            )
        if status in TERMINAL_DOWN:
            raise PermanentError(f"the upstream service {upstream_id} is {status}")
        if status == "setup_cancelled":
            # the upstream's staff stopped its setup: waiting would not set it up; people
            # here decide (their staff may retry it there, then this runs again)
            reason = service.get("setup_cancelled_reason") or "no reason was given"
            raise PermanentError(
                f"the upstream cancelled the setup of service {upstream_id}: {reason}"
            )
        self._note_waiting(ctx, upstream_id, service)
        return self._poll(state)

    def _service(self, ctx, upstream_id):
        return self._request(ctx, "GET", f"/services/{upstream_id}")

    def _note_waiting(self, ctx, upstream_id, service):
        op = service.get("operation") or {}
        line = f"upstream service {upstream_id} is {service.get('status')}"
        if op:
            line += f"; its {op.get('kind')} operation is {op.get('status')}"
            if op.get("status") == "manual":
                line += " (upstream staff have a task for it)"
            if op.get("last_error"):
                line += f": {op['last_error']}"
        ctx.log(line + "; checking again later")

    def _details(self, ctx, upstream):
        """The upstream's details this product type declares (by name; all of them when
        it declares none)."""
        declared = [
            f["name"] for f in ((ctx.product_type.detail_fields or []) if ctx.product_type else [])
        ]
        if not declared:
            return dict(upstream)
        left_out = sorted(set(upstream) - set(declared))
        if left_out:
            ctx.log("upstream details not in this product type, left out: " + ", ".join(left_out))
        return {name: upstream[name] for name in declared if name in upstream}

    # --- the other operations -------------------------------------------------------------

    def _upstream_id(self, ctx):
        upstream_id = ctx.service_data.get("upstream_service_id") or ctx.service.remote_id
        if not upstream_id:
            raise PermanentError("this service has no upstream service (its open never made one)")
        return int(upstream_id)

    def _forward(self, ctx, body=None):
        state = dict(ctx.state)
        upstream_id = self._upstream_id(ctx)
        op_id = state.get("upstream_operation_id")
        if op_id is None:
            key = self._key(ctx)
            try:
                op = self._request(
                    ctx,
                    "POST",
                    f"/services/{upstream_id}/{ctx.kind}",
                    {"idempotency_key": key, **(body or {})},
                )
            except Refused as exc:
                if ctx.kind == "close" and exc.status == 409:
                    found = self._service(ctx, upstream_id)
                    if found.get("status") == "deleted":
                        ctx.log(f"upstream service {upstream_id} is deleted already")
                        return Result.done(remote_id=upstream_id)
                raise
            op_id = op["id"]
            state = {"upstream_operation_id": op_id}
            ctx.save_state(state)
            ctx.log(f"upstream operation {op_id} ({ctx.kind}, key {key})")
        op = self._request(ctx, "GET", f"/operations/{op_id}")
        if op.get("status") == "done":
            found = self._service(ctx, upstream_id) if ctx.kind in ("renew", "open") else {}
            return Result.done(remote_id=upstream_id, expires_at=found.get("expires_at"))
        if op.get("status") == "cancelled":
            raise PermanentError(
                f"the upstream cancelled its {ctx.kind} operation {op_id}"
                + (f": {op['last_error']}" if op.get("last_error") else "")
            )
        line = f"upstream operation {op_id} ({ctx.kind}) is {op.get('status')}"
        if op.get("status") == "manual":
            line += " (upstream staff have a task for it)"
        ctx.log(line + "; checking again later")
        return self._poll(state)

    def suspend(self, ctx):
        return self._forward(ctx)

    def resume(self, ctx):
        return self._forward(ctx)

    def close(self, ctx):
        return self._forward(ctx)

    def renew(self, ctx):
        return self._forward(ctx)

    def change_tariff(self, ctx):
        return self._forward(ctx, {"tariff_id": self._upstream_tariff(ctx)})

    # --- items and Test connection --------------------------------------------------------

    def ensure_item(self, ctx):
        wanted = self._upstream_tariff(ctx)
        offered = self._request(ctx, "GET", "/tariffs").get("tariffs") or []
        found = [t for t in offered if t.get("id") == wanted]
        if not found:
            names = ", ".join(f"{t.get('id')} ({t.get('name')})" for t in offered) or "none"
            raise PermanentError(
                f"the upstream does not sell tariff {wanted} to this reseller (not orderable "
                f"there, or no such tariff); it sells: {names}"
            )
        tariff = found[0]
        ctx.log(
            f"upstream tariff {wanted}: {tariff.get('name')} ({tariff.get('product_type')}, "
            f"{tariff.get('price')} {tariff.get('currency')} a {tariff.get('period')})"
        )
        return Result.done(remote_id=str(wanted))

    def check_config(self):
        url = self._url("/tariffs")
        try:
            reply, data = self._send("GET", "/tariffs")
        except outbound.Refused as exc:
            raise ConfigProblem(exc.message, field="url") from None
        except ValueError as exc:
            raise ConfigProblem(str(exc), field="url") from None
        except requests.Timeout:
            raise ConfigProblem(
                f"no answer from {url} within {self.call_timeout():g} s", field="timeout"
            ) from None
        except requests.RequestException as exc:
            raise ConfigProblem(f"cannot reach {url}: {why(exc)}", field="url") from None
        said = _message(data) or " ".join(reply.text.split())[:200]
        if reply.status_code in (401, 403):
            raise ConfigProblem(
                f"the upstream refused the token ({reply.status_code}: {said})", field="token"
            )
        if reply.status_code != 200 or not isinstance(data, dict) or "tariffs" not in data:
            raise ConfigProblem(
                f"{url} answered {reply.status_code} {reply.reason}, not a Provisor's "
                f"reseller API: {said}",
                field="url",
            )
        tariffs = data["tariffs"]
        return f"the upstream sells {len(tariffs)} tariff(s) to this reseller" + (
            ": " + ", ".join(f"{t['id']} {t['name']}" for t in tariffs[:10]) if tariffs else ""
        )


def _code(data):
    """The error code of a Provisor error answer (None: not one)."""
    error = data.get("error") if isinstance(data, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def _message(data):
    """The error message of a Provisor error answer (with its field messages)."""
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return None
    error = data["error"]
    message = str(error.get("message") or "")
    fields = error.get("fields") or {}
    extra = [f"{k}: {v}" for k, v in fields.items() if f"{k}: {v}" not in message]
    return "; ".join([message, *extra]) if extra else message
