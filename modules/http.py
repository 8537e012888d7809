"""The http module: for panels with no built-in module.

For each operation Provisor POSTs JSON ``{"operation", "operation_id", "service",
"tariff", "client", "params"}`` to ``url``, signed with ``secret`` (header
``X-Provisor-Signature``: ``v2`` bound to the direction ``request`` and the URL's path,
and ``v1`` like the payment webhook while ``signatures`` is ``v1+v2``; see
:mod:`app.signing`). Callbacks are signed by the endpoint the same way, direction
``callback``. A 2xx reply ``{"status": "done",
"remote_id", "details"}`` completes the operation; ``{"status": "pending"}`` leaves it
waiting for ``POST /api/v1/operations/<id>/callback``; a 5xx, a timeout or a refused
connection is a temporary error; a 4xx is a permanent one. ``operation_id`` is the
idempotency key: the endpoint must answer a repeated id with the same result.

"Test connection" POSTs ``{"operation": "check"}`` signed the same way: a 2xx answer (or a
4xx other than 401/403/404: the endpoint may not know ``check``) means the URL and the
secret work.
"""

import contextlib
import json
import re

import requests

from app import outbound, signing
from modules.base import (
    ConfigField,
    ConfigProblem,
    ModuleType,
    PermanentError,
    Result,
    TemporaryError,
    operation_context,
)

MAX_LOGGED = 4000
MAX_REPLY = outbound.MAX_REPLY  # the most of an endpoint's answer Provisor reads


class ReplyTooLarge(Exception):
    """The endpoint's answer goes on past MAX_REPLY bytes."""


def why(exc):
    """What a failed connection says in a person's words: ``ConnectionError (Connection
    refused)``, ``ConnectionError (Name or service not known)``..."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    name = exc.__class__.__name__
    return f"{name} ({found.group(1).strip()})" if found else name


def _short(text):
    return text if len(text) <= MAX_LOGGED else text[:MAX_LOGGED] + "... (cut)"


class HttpModule(ModuleType):
    id = "http"
    name = "HTTP endpoint"
    description = "Calls your own HTTP endpoint with signed JSON for each operation."
    operations = frozenset(
        {"open", "suspend", "resume", "close", "change_tariff", "renew", "ensure_item"}
    )
    accepts_callbacks = True
    config_fields = [
        ConfigField("url", "Endpoint URL", kind="url", required=True),
        ConfigField("secret", "Signing secret", kind="secret", required=True),
        ConfigField(
            "timeout", "Timeout (s)", kind="float", default=30.0, minimum=0.1, maximum=3600
        ),
        ConfigField(
            "signatures",
            "Signatures",
            kind="choice",
            default="v1+v2",
            options=(
                ("v1+v2", "v1 and v2 (transition: callbacks signed v1 are still accepted)"),
                ("v2", "v2 only (requests and callbacks bound to their direction and path)"),
            ),
            help="v2 binds each signature to its direction and path, so a request "
            "Provisor sent cannot be replayed as a callback. Choose v2 only once your "
            "endpoint verifies and signs v2 (README: the http module).",
        ),
    ]

    def _payload(self, ctx):
        return operation_context(ctx)

    def _v1(self):
        """Whether v1 signatures are still sent and accepted (the transition)."""
        return (self.config.get("signatures") or "v1+v2") != "v2"

    def _post(self, body, idempotency_key=None):
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        # checked, signed, no redirects followed, no more than MAX_REPLY bytes read
        try:
            return outbound.post_signed(
                self.config["url"],
                body,
                self.config["secret"],
                "request",
                self.timeout(),
                headers=headers,
                v1=self._v1(),
                limit=MAX_REPLY,
            )
        except outbound.TooLarge:
            raise ReplyTooLarge(f"the endpoint's answer is larger than {MAX_REPLY} bytes") from None

    def _call(self, ctx):
        body = json.dumps(self._payload(ctx), sort_keys=True).encode()
        url = self.config["url"]
        with ctx.call("POST", url) as call:
            call.note(_short(body.decode()))
            try:
                reply = self._post(body, str(ctx.operation.id))
            except outbound.Refused as exc:
                call.outcome = "refused by Provisor"
                raise PermanentError(f"not calling {url}: {exc.message}") from None
            except ReplyTooLarge as exc:
                call.outcome = str(exc)
                raise PermanentError(str(exc)) from None
            except requests.Timeout:
                call.outcome = f"timeout after {self.timeout():g} s"
                raise TemporaryError(f"timeout after {self.timeout():g} s calling {url}") from None
            except requests.RequestException as exc:
                call.outcome = f"connection error: {why(exc)}"
                raise TemporaryError(f"cannot reach {url}: {why(exc)}") from None
            call.outcome = f"{reply.status_code} {reply.reason}"
        with contextlib.suppress(ValueError):
            ctx.secrets_in(reply.json())  # its passwords never reach the log or an error
        ctx.log(f"  {_short(reply.text)}")
        if reply.status_code >= 500:
            raise TemporaryError(
                f"endpoint answered {reply.status_code}: {_short(reply.text)[:200]}"
            )
        if reply.status_code >= 400:
            raise PermanentError(
                f"endpoint answered {reply.status_code}: {_short(reply.text)[:200]}"
            )
        if 300 <= reply.status_code < 400:
            raise PermanentError(
                f"endpoint answered {reply.status_code} redirecting to "
                f"{reply.headers.get('Location') or '(nowhere)'}: Provisor does not follow "
                "redirects; set the module's URL to where it should post"
            )
        if not 200 <= reply.status_code < 300:
            raise TemporaryError(f"endpoint answered {reply.status_code}")
        try:
            data = reply.json()
        except ValueError:
            raise TemporaryError("endpoint answered with a body that is not JSON") from None
        return parse_reply(data)

    def open(self, ctx):
        return self._call(ctx)

    suspend = resume = close = change_tariff = renew = ensure_item = open

    def check_config(self):
        url = self.config["url"]
        body = json.dumps({"operation": "check", "operation_id": None}).encode()
        try:
            reply = self._post(body)
        except outbound.Refused as exc:
            raise ConfigProblem(exc.message, field="url") from None
        except ReplyTooLarge as exc:
            raise ConfigProblem(str(exc), field="url") from None
        except requests.Timeout:
            raise ConfigProblem(
                f"no answer from {url} within {self.timeout():g} s", field="timeout"
            ) from None
        except requests.RequestException as exc:
            raise ConfigProblem(
                f"cannot reach {url}: {exc.__class__.__name__}", field="url"
            ) from None
        text = " ".join(reply.text.split())[:200]
        if reply.status_code in (401, 403):
            raise ConfigProblem(
                f"the endpoint refused the signature ({reply.status_code} {reply.reason}: {text})",
                field="secret",
            )
        if reply.status_code == 404 or reply.status_code >= 500:
            raise ConfigProblem(
                f"the endpoint answered {reply.status_code} {reply.reason}: {text}", field="url"
            )
        return f"{url} answered {reply.status_code} {reply.reason}"

    def verify_callback(self, body, headers, tolerance, path=None):
        """A v2 signature for the direction ``callback`` and this path; during the
        transition a v1 one too, unless the body is one of Provisor's own requests (a v1
        signature cannot tell the directions apart: that is a replay)."""
        header = headers.get(signing.HEADER)
        reason = signing.verify(
            self.config.get("secret"),
            body,
            header,
            tolerance=tolerance,
            direction="callback",
            path=path,
            v1=self._v1(),
        )
        if reason is None and _is_provisor_request(body, header):
            return "a request Provisor sent cannot be a callback (sign callbacks with v2)"
        return reason

    def parse_callback(self, data):
        return parse_reply(data)


def _is_provisor_request(body, header):
    """A body only v1 vouches for that has the shape of Provisor's requests."""
    parsed = signing.parse(header)
    if isinstance(parsed, str) or parsed[1]["v2"]:
        return False
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and "operation" in data and "operation_id" in data


def parse_reply(data):
    """A reply (or callback) body as a Result; raise on ``error`` or a malformed body."""
    if not isinstance(data, dict):
        raise TemporaryError("endpoint reply is not a JSON object")
    status = data.get("status")
    if status == "done":
        details = data.get("details") or {}
        if not isinstance(details, dict):
            raise TemporaryError("endpoint reply: details must be an object")
        remote_id = data.get("remote_id")
        try:
            return Result.done(
                None if remote_id is None else str(remote_id),
                details,
                expires_at=data.get("expires_at"),
            )
        except (TypeError, ValueError):
            raise TemporaryError("endpoint reply: expires_at must be an ISO 8601 date") from None
    if status == "pending":
        return Result.pending()
    if status == "error":
        message = str(data.get("message") or data.get("error") or "endpoint reported an error")
        raise (PermanentError if data.get("permanent") else TemporaryError)(message)
    raise TemporaryError(f"endpoint reply has an unknown status {status!r}")
