"""The shellscripts module: any panel or server with a command line, over SSH.

For each operation Provisor connects to the provider's server over SSH (a private key or
a password) and runs the provider's script for that operation (``open``, ``suspend``,
``resume``, ``close``, ``change_tariff``, ``renew``, ``ensure_item``: by default
``<scripts_dir>/<operation>``, each path can be set on its own).

**What a script gets.** Environment variables, set through the remote command's ``env``
prefix (sshd's ``AcceptEnv`` usually refuses the SSH protocol's own ``setenv``):
``PROVISOR_OPERATION`` (the kind), ``PROVISOR_OPERATION_ID`` (the idempotency key: the
same on every attempt of one operation), ``PROVISOR_ATTEMPT``, ``PROVISOR_SERVICE_ID``,
``PROVISOR_REMOTE_ID``, ``PROVISOR_TARIFF`` (the tariff's internal name; for
``change_tariff`` the new one, ``PROVISOR_OLD_TARIFF`` the one before), ``PROVISOR_CLIENT_ID``,
``PROVISOR_CLIENT_EMAIL``, ``PROVISOR_CLIENT_NAME``, every order field and operation
parameter as ``PROVISOR_PARAM_<NAME>`` (``PROVISOR_PARAM_REASON``: why staff suspend), every top-level value of the tariff's item settings as
``PROVISOR_ITEM_<NAME>``, and the module's own ``environment`` setting (``NAME=value``
lines). On standard input: the whole context as one JSON object.

**What a script answers.** Exit 0 with ``{"remote_id": "...", "details": {...}}`` on
standard output: done (``open`` must name a ``remote_id``; other operations may print
nothing; ``data`` and ``expires_at`` may be added). Exit 75 (``EX_TEMPFAIL``): a temporary
error, retried after the module's retry delay. Any other exit: a permanent error (a
person gets a task). Standard error goes into the attempt log and the error (secrets
masked) in every case. Anything else on standard output of a successful script is a
permanent error ("not the JSON answer").

**Time limit.** Each script may run ``time_limit`` seconds. With ``server_time_limit``
(the default) the command runs under ``timeout(1)`` on the server, which stops the script
and its children at the limit (exit 124: a temporary error, "ran past its time limit");
Provisor itself gives up on the channel a few seconds later in any case, and the
attempt's deadline (``timeout()``) and the operation's lease are longer still.

**Host key.** ``host_key`` holds the server's pinned key (``ssh-ed25519 SHA256:...``, as
``ssh-keygen -lf`` prints it). Empty, the first successful "Test connection" pins the key
it saw (it is saved into the module's settings); operations refuse to run before that.
Once pinned, a server presenting another key is refused, permanently, before any
credential is sent, with both fingerprints in the error.

**Take over, never duplicate.** Provisor may run a script twice for one operation (a
worker killed mid-run, a lost answer): scripts derive what they create from
``PROVISOR_SERVICE_ID`` (or the operation id), look it up first and adopt what an earlier
run made. The example scripts (``docs/examples/shellscripts/``) show how.
"""

import io
import json
import re
import shlex
import time

import paramiko

from modules.base import (
    ConfigField,
    ConfigProblem,
    ModuleType,
    PermanentError,
    QuietLog,
    Result,
    TemporaryError,
    is_secret_key,
    operation_context,
)

OPERATIONS = ("open", "suspend", "resume", "close", "change_tariff", "renew", "ensure_item")
EX_TEMPFAIL = 75
TIMEOUT_EXIT = 124  # timeout(1): the command ran past its limit
KILL_AFTER = 5  # timeout(1) -k: seconds between its TERM and its KILL
MAX_STDOUT = 1024 * 1024
MAX_STDERR = 64 * 1024
# sshd sends a script's exit status when the script ends, and the end of its output when the
# output pipes are drained, in either order: the output is read to its end; a process the
# script left running with the output still open is waited for this long after the exit
OUTPUT_END_GRACE = 2.0
MAX_LOGGED = 4000
MAX_ERROR = 600
FINGERPRINT = re.compile(r"^(?:(?P<type>[a-z][a-z0-9@.-]+)\s+)?(?P<fp>SHA256:[A-Za-z0-9+/]{43})$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
KEY_CLASSES = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)
# the host key algorithms that present a key of each type
HOST_KEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


class HostKeyRefused(Exception):
    """The server presented a key other than the pinned one (or none is pinned)."""

    def __init__(self, message, seen):
        super().__init__(message)
        self.message = message
        self.seen = seen


def fingerprint(key):
    """``<type> SHA256:<base64>``: the key's name and its OpenSSH fingerprint."""
    return f"{key.get_name()} {key.fingerprint}"


# what ssh-keygen -lf prints: "256 SHA256:… root@web1 (ED25519)"
KEYGEN_LINE = re.compile(
    r"^(?P<bits>\d+)\s+(?P<fp>SHA256:[A-Za-z0-9+/]{43})\b.*\((?P<kind>[A-Z0-9-]+)\)$"
)
KEYGEN_TYPES = {"ED25519": "ssh-ed25519", "RSA": "ssh-rsa", "ECDSA": "ecdsa-sha2-nistp{bits}"}


def parse_pin(text):
    """``(key type, "SHA256:...")`` of a ``host_key`` setting — ``<type> SHA256:…`` or a
    line of ``ssh-keygen -lf`` — or None. The type is needed: a server has a key of
    each type, and the pinned one must be the one negotiated."""
    text = " ".join((text or "").split())
    found = FINGERPRINT.match(text)
    if found and found.group("type"):
        return found.group("type"), found.group("fp")
    found = KEYGEN_LINE.match(text)
    if found and found.group("kind") in KEYGEN_TYPES:
        bits = found.group("bits")
        return KEYGEN_TYPES[found.group("kind")].format(bits=bits), found.group("fp")
    return None


def normal_pin(text):
    """A ``host_key`` setting as ``<type> SHA256:…`` (None: not one)."""
    pin = parse_pin(text)
    return f"{pin[0]} {pin[1]}" if pin else None


class _Pin(paramiko.MissingHostKeyPolicy):
    """Checks the key the server presents against the pinned one (before any credential
    is sent); with nothing pinned it remembers the key when ``learn``, else refuses."""

    def __init__(self, pinned, learn):
        self.pinned = parse_pin(pinned) if pinned else None
        self.learn = learn
        self.seen = None

    def missing_host_key(self, client, hostname, key):
        self.seen = fingerprint(key)
        if self.pinned is None:
            if self.learn:
                return
            raise HostKeyRefused(
                f"the server's host key is not pinned yet: run Test connection (it pins the "
                f"key it sees, now {self.seen}), or set host_key",
                self.seen,
            )
        wanted_type, wanted = self.pinned
        if key.fingerprint != wanted or wanted_type != key.get_name():
            pinned = f"{wanted_type} {wanted}"
            raise HostKeyRefused(
                f"the server's host key has changed: it presents {self.seen}, the pinned key "
                f"is {pinned}. Refused before sending any credential. If the server was "
                "really reinstalled, check the new key and set host_key to it (or empty it "
                "and run Test connection)",
                self.seen,
            )


def load_private_key(text, passphrase=None):
    """A paramiko key from a PEM / OpenSSH private key text; ValueError saying why not."""
    text = (text or "").strip() + "\n"
    if "-----BEGIN" not in text or "PRIVATE KEY-----" not in text:
        raise ValueError("Not a private key: it starts with -----BEGIN … PRIVATE KEY-----.")
    last = None
    for cls in KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase or None)
        except paramiko.PasswordRequiredException:
            raise ValueError("The key is encrypted: give its passphrase.") from None
        except (paramiko.SSHException, ValueError, TypeError, IndexError) as exc:
            last = exc
            said = str(exc).lower()
            if passphrase and any(w in said for w in ("checkints", "decrypt", "bad pass")):
                raise ValueError("Cannot decrypt the key: wrong passphrase?") from None
    raise ValueError(
        "Not a private key Provisor can read (OpenSSH or PEM; Ed25519, ECDSA or RSA)"
        + (f": {last}" if last else "")
    )


def _env_value(value):
    return "" if value is None else str(value).replace("\0", "")


def _short(text, limit=MAX_LOGGED):
    return text if len(text) <= limit else text[:limit] + "... (cut)"


def _tail(text, limit=MAX_ERROR):
    text = text.strip()
    return text if len(text) <= limit else "... " + text[-limit:]


class ShellScriptsModule(ModuleType):
    id = "shellscripts"
    name = "Scripts over SSH"
    description = (
        "Runs your own script for each operation on your server over SSH (any panel or "
        "server with a command line): context in environment variables and JSON on "
        "standard input, the answer as JSON on standard output."
    )
    operations = frozenset(OPERATIONS)
    SCRIPT_FIELDS = tuple(f"script_{kind}" for kind in OPERATIONS)
    config_fields = [
        ConfigField("host", "Server host", required=True, help="Where Provisor connects."),
        ConfigField("port", "SSH port", kind="int", default=22, minimum=1, maximum=65535),
        ConfigField(
            "username",
            "User",
            required=True,
            default="root",
            help="The account the scripts run as: it needs the rights they use "
            "(creating users needs root, or sudo inside the script).",
        ),
        ConfigField(
            "private_key",
            "Private key",
            kind="secret",
            multiline=True,
            help="OpenSSH or PEM (Ed25519, ECDSA or RSA). Its public half goes into "
            "the user's authorized_keys on the server.",
        ),
        ConfigField("key_passphrase", "Key passphrase", kind="secret"),
        ConfigField(
            "password",
            "Password",
            kind="secret",
            help="Used when no key is given (or the key is refused).",
        ),
        ConfigField(
            "host_key",
            "Host key (pinned)",
            help="The server's key type and fingerprint, e.g. 'ssh-ed25519 SHA256:…', or "
            "what ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub prints. Empty: the first "
            "successful Test connection pins the key it sees. A server presenting another "
            "key is refused.",
        ),
        ConfigField(
            "scripts_dir",
            "Scripts folder",
            default="/usr/local/lib/provisor",
            help="Each operation runs <folder>/<operation> (open, suspend, resume, close, "
            "change_tariff, renew, ensure_item) unless its own path is set below.",
        ),
        *[
            ConfigField(
                f"script_{kind}",
                f"Script for {kind}",
                help=f"Empty: <scripts folder>/{kind}.",
            )
            for kind in OPERATIONS
        ],
        ConfigField(
            "environment",
            "Environment",
            kind="text",
            max_length=10000,
            help="NAME=value lines given to every script (not secret: they are shown in "
            "the attempt log), e.g. USER_PREFIX=web.",
        ),
        ConfigField(
            "time_limit",
            "Time limit per script (s)",
            kind="float",
            default=120.0,
            minimum=1,
            maximum=3600,
        ),
        ConfigField(
            "server_time_limit",
            "Stop the script on the server at the limit",
            kind="bool",
            default=True,
            help="Runs each script under timeout(1) (coreutils, on every Linux), which ends "
            "it and its children at the limit. Off: Provisor only stops waiting (the script "
            "may go on running).",
        ),
        ConfigField(
            "connect_timeout",
            "Connect timeout (s)",
            kind="float",
            default=10.0,
            minimum=1,
            maximum=120,
            help="For connecting, the key exchange and logging in, each.",
        ),
    ]
    item_fields = [
        ConfigField(
            "settings",
            "Settings for the scripts (JSON object)",
            kind="text",
            max_length=20000,
            help='Handed to the scripts: "item_settings" on standard input, and each '
            'top-level value as PROVISOR_ITEM_<NAME>, e.g. {"quota_mb": 1024}.',
        ),
    ]

    # --- settings -------------------------------------------------------------------------

    @classmethod
    def validate_config(cls, data):
        cleaned, errors = super().validate_config(data)
        host = cleaned.get("host") or ""
        if "host" not in errors and host and not re.match(r"^[A-Za-z0-9.:_\[\]-]+$", host):
            errors["host"] = "A host name or an IP address (no user, no port)."
        user = cleaned.get("username") or ""
        if (
            "username" not in errors
            and user
            and not re.match(r"^[A-Za-z0-9._][A-Za-z0-9._-]*$", user)
        ):
            errors["username"] = "A user name (letters, digits, . _ -)."
        pin = cleaned.get("host_key")
        if "host_key" not in errors and pin:
            if normal_pin(pin) is None:
                errors["host_key"] = (
                    "The key type and its fingerprint, 'ssh-ed25519 SHA256:…' (43 "
                    "characters after SHA256:), or a line of ssh-keygen -lf as it prints it "
                    "('256 SHA256:… root@web1 (ED25519)')."
                )
            else:
                cleaned["host_key"] = normal_pin(pin)
        key = cleaned.get("private_key")
        if "private_key" not in errors and key:
            try:
                load_private_key(key, cleaned.get("key_passphrase"))
            except ValueError as exc:
                field = "key_passphrase" if "passphrase" in str(exc) else "private_key"
                errors[field] = str(exc)
        if not key and not cleaned.get("password") and "private_key" not in errors:
            errors["private_key"] = "Give a private key or a password."
        for name in ("scripts_dir", *cls.SCRIPT_FIELDS):
            path = cleaned.get(name) or ""
            if name not in errors and path and "\0" in path:
                errors[name] = "A path on the server."
        environment, problem = cls._parse_environment(cleaned.get("environment"))
        if problem and "environment" not in errors:
            errors["environment"] = problem
        return cleaned, errors

    @staticmethod
    def _parse_environment(text):
        """``([(name, value)], problem)`` of the environment setting."""
        pairs = []
        for number, line in enumerate((text or "").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, value = line.partition("=")
            name = name.strip()
            if not sep or not ENV_NAME.match(name):
                return [], f"Line {number}: NAME=value, the name of letters, digits and _."
            if name.upper().startswith("PROVISOR_"):
                return [], f"Line {number}: PROVISOR_… names are Provisor's own."
            pairs.append((name, value))
        return pairs, None

    @classmethod
    def validate_item(cls, data):
        data = dict(data or {})
        if isinstance(data.get("settings"), dict):
            data["settings"] = json.dumps(data["settings"], sort_keys=True)
        cleaned, errors = super().validate_item(data)
        text = cleaned.get("settings")
        if "settings" not in errors and text:
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                errors["settings"] = f"Not JSON: {exc}"
            else:
                if not isinstance(parsed, dict):
                    errors["settings"] = 'A JSON object, e.g. {"quota_mb": 1024}.'
                else:
                    cleaned["settings"] = json.dumps(parsed, sort_keys=True)
        return cleaned, errors

    def secret_values(self):
        values = super().secret_values()
        # a script that prints one line of the key still does not show it
        for line in (self.config.get("private_key") or "").splitlines():
            if len(line.strip()) >= 16 and not line.startswith("-----"):
                values.append(line.strip())
        return values

    # --- time -------------------------------------------------------------------------------

    def connect_timeout(self):
        return float(self.config.get("connect_timeout") or 10.0)

    def time_limit(self):
        return float(self.config.get("time_limit") or 120.0)

    def wait_limit(self):
        """How long Provisor waits for a script's exit: the limit, then timeout(1)'s
        TERM-to-KILL time and a margin for its exit status to arrive."""
        margin = KILL_AFTER + 3 if self.config.get("server_time_limit", True) else 1
        return self.time_limit() + margin

    def timeout(self):
        """The attempt: connecting (TCP, banner, key exchange, login, the session: each
        bounded by the connect timeout), then waiting for the script, then closing."""
        return 5 * self.connect_timeout() + self.wait_limit() + 5

    def io_timeout(self):
        """One blocking call: a connect, a key exchange or a login (the channel is read
        in short slices)."""
        return self.connect_timeout()

    # --- where -------------------------------------------------------------------------------

    def address(self):
        host = self.config.get("host") or ""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.config.get('port') or 22}"

    def target(self):
        return f"ssh://{self.config.get('username')}@{self.address()}"

    def script_path(self, kind):
        own = (self.config.get(f"script_{kind}") or "").strip()
        if own:
            return own
        folder = (self.config.get("scripts_dir") or "/usr/local/lib/provisor").rstrip("/")
        return f"{folder}/{kind}"

    # --- connecting ------------------------------------------------------------------------

    def _disabled_host_keys(self):
        """Only the pinned key's type is negotiated (a server has several host keys; the
        pinned one must be the one it presents)."""
        pin = parse_pin(self.config.get("host_key"))
        if not pin:
            return {}
        allowed = HOST_KEY_ALGORITHMS.get(pin[0], (pin[0],))
        preferred = getattr(paramiko.Transport, "_preferred_keys", ())
        disabled = [name for name in preferred if name not in allowed]
        return {"keys": disabled} if disabled else {}

    def connect(self, ctx, learn=False):
        """An SSH client logged in to the server (the host key checked first); raises
        Temporary-/PermanentError (HostKeyRefused for a key that is not the pinned one)."""
        config = self.config
        seconds = self.connect_timeout()
        ctx.secret(config.get("password"))
        ctx.secret(config.get("key_passphrase"))
        pkey = None
        if config.get("private_key"):
            try:
                pkey = load_private_key(config["private_key"], config.get("key_passphrase"))
            except ValueError as exc:
                raise PermanentError(f"the module's private key: {exc}") from None
        client = paramiko.SSHClient()
        policy = _Pin(config.get("host_key"), learn)
        client.set_missing_host_key_policy(policy)
        with ctx.call("SSH", self.target()) as call:
            try:
                client.connect(
                    config.get("host"),
                    port=int(config.get("port") or 22),
                    username=config.get("username"),
                    password=config.get("password") or None,
                    pkey=pkey,
                    timeout=seconds,
                    banner_timeout=seconds,
                    auth_timeout=seconds,
                    channel_timeout=seconds,
                    allow_agent=False,
                    look_for_keys=False,
                    disabled_algorithms=self._disabled_host_keys(),
                )
            except HostKeyRefused as exc:
                client.close()
                call.outcome = f"host key refused: {exc.seen}"
                raise
            except paramiko.AuthenticationException as exc:
                client.close()
                call.outcome = "login refused"
                how = "key" if pkey is not None else "password"
                if pkey is not None and config.get("password"):
                    how = "key and password"
                raise PermanentError(
                    f"{self.target()} refused the login with the module's {how}: {exc}"
                ) from None
            except paramiko.ssh_exception.IncompatiblePeer as exc:
                client.close()
                pin = parse_pin(config.get("host_key"))
                call.outcome = f"no common algorithm: {self._describe(exc)}"
                if pin is None or "host key" not in str(exc):
                    raise PermanentError(
                        f"{self.address()} and Provisor have no SSH algorithm in common: "
                        f"{self._describe(exc)}"
                    ) from None
                raise PermanentError(
                    f"the server offers no host key of the pinned type {pin[0]} (pinned: "
                    f"{pin[0]} {pin[1]}): it was reconfigured or reinstalled. Check its key "
                    f"and set host_key to it ({self._describe(exc)})"
                ) from None
            except TimeoutError:
                client.close()
                call.outcome = f"timeout after {seconds:g} s"
                raise TemporaryError(
                    f"{self.address()} did not answer within {seconds:g} s"
                ) from None
            except (paramiko.SSHException, OSError, EOFError) as exc:
                client.close()
                said = self._describe(exc)
                call.outcome = f"cannot connect: {said}"
                raise TemporaryError(f"cannot connect to {self.address()}: {said}") from None
            except BaseException:
                client.close()
                raise
            call.outcome = f"logged in, host key {policy.seen or 'as pinned'}"
        client.seen_host_key = policy.seen
        return client

    @staticmethod
    def _describe(exc):
        text = str(exc) or exc.__class__.__name__
        found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
        if found:
            text = found.group(1).strip()
        return " ".join(text.split())[:300]

    # --- running a script ---------------------------------------------------------------

    def environment(self, ctx):
        """The script's environment variables, in order."""
        service, tariff, client = ctx.service, ctx.tariff, ctx.client
        params = dict(ctx.params or {})
        internal = params.get("tariff_internal_name") or ctx.internal_name
        env = [
            ("PROVISOR_OPERATION", ctx.kind),
            ("PROVISOR_OPERATION_ID", ctx.operation.id),
            ("PROVISOR_ATTEMPT", ctx.attempt_number),
            ("PROVISOR_SERVICE_ID", service.id if service is not None else ""),
            ("PROVISOR_REMOTE_ID", (service.remote_id or "") if service is not None else ""),
            ("PROVISOR_TARIFF", internal or ""),
        ]
        if ctx.kind == "change_tariff" and tariff is not None:
            env.append(("PROVISOR_OLD_TARIFF", tariff.internal_name or ""))
        if client is not None:
            env += [
                ("PROVISOR_CLIENT_ID", client.id),
                ("PROVISOR_CLIENT_EMAIL", client.email or ""),
                ("PROVISOR_CLIENT_NAME", client.name or ""),
            ]
        for name, value in sorted(params.items()):
            if name in ("tariff_id", "tariff_internal_name"):
                continue
            if isinstance(value, (str, int, float, bool)):
                env.append((f"PROVISOR_PARAM_{_env_part(name)}", value))
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                env.append((f"PROVISOR_PARAM_{_env_part(name)}", " ".join(value)))
        for name, value in sorted(self.item_settings(ctx).items()):
            if isinstance(value, bool):
                value = "1" if value else "0"
            if isinstance(value, (str, int, float)):
                env.append((f"PROVISOR_ITEM_{_env_part(name)}", value))
        env += self._parse_environment(self.config.get("environment"))[0]
        return [(name, _env_value(value)) for name, value in env]

    @staticmethod
    def item_settings(ctx):
        text = (ctx.item_settings or {}).get("settings")
        if not text:
            return {}
        try:
            parsed = json.loads(text)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    def payload(self, ctx):
        """The whole context, as JSON on the script's standard input: what the http module
        sends (``operation_context``), the service's module data, the item's settings and
        the new tariff of a change_tariff."""
        payload = operation_context(ctx)
        if payload["service"] is not None:
            payload["service"]["data"] = ctx.service.module_data or {}
        payload["new_tariff_internal_name"] = (ctx.params or {}).get("tariff_internal_name")
        payload["item_settings"] = self.item_settings(ctx)
        payload["params"] = {
            k: v
            for k, v in (ctx.params or {}).items()
            if k not in ("tariff_id", "tariff_internal_name")
        }
        return payload

    def command(self, ctx):
        env = " ".join(f"{name}={shlex.quote(value)}" for name, value in self.environment(ctx))
        script = shlex.quote(self.script_path(ctx.kind))
        if self.config.get("server_time_limit", True):
            script = f"timeout -k {KILL_AFTER} {self.time_limit():g} {script}"
        return f"env {env} {script}"

    def execute(self, ctx, client, command, stdin, label):
        """Run ``command`` with ``stdin``; ``(exit status or None, stdout, stderr,
        seconds, stopped)``: ``stopped`` when Provisor gave up waiting."""
        seconds = self.connect_timeout()
        transport = client.get_transport()
        started = time.monotonic()
        with ctx.call("RUN", label) as call:
            try:
                channel = transport.open_session(timeout=seconds)
                channel.settimeout(seconds)
                channel.exec_command(command)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                call.outcome = f"cannot start: {self._describe(exc)}"
                raise TemporaryError(
                    f"cannot start {label} on {self.address()}: {self._describe(exc)}"
                ) from None
            try:
                try:
                    channel.sendall(stdin)
                    channel.shutdown_write()
                except (OSError, EOFError, paramiko.SSHException):
                    pass  # the script ended without reading it all
                out, err = bytearray(), bytearray()
                too_much = stopped = left_open = False
                limit = started + self.wait_limit()
                exited_at = None
                while True:
                    busy = False
                    while channel.recv_ready():
                        chunk = channel.recv(65536)
                        busy = True
                        if len(out) + len(chunk) > MAX_STDOUT:
                            too_much = True
                        else:
                            out += chunk
                    while channel.recv_stderr_ready():
                        err += channel.recv_stderr(65536)
                        busy = True
                        if len(err) > MAX_STDERR:
                            del err[: len(err) - MAX_STDERR]
                    drained = not channel.recv_ready() and not channel.recv_stderr_ready()
                    if drained and (
                        channel.closed or (channel.eof_received and channel.exit_status_ready())
                    ):
                        break  # the whole output, and the exit (or none: a signal, cut off)
                    if drained and channel.exit_status_ready() and not channel.eof_received:
                        exited_at = exited_at or time.monotonic()
                        if time.monotonic() - exited_at >= OUTPUT_END_GRACE:
                            left_open = True  # something it started holds the output open
                            break
                    if time.monotonic() >= limit:
                        stopped = True
                        break
                    if not busy and channel.status_event.is_set():
                        time.sleep(0.01)  # exited: waiting for the rest of its output
                    elif not busy:
                        channel.status_event.wait(0.02)
                status = None
                if not stopped and channel.exit_status_ready():
                    status = channel.recv_exit_status()
                    if status == -1:
                        status = None  # no exit status: ended by a signal, or cut off
            finally:
                channel.close()
            elapsed = time.monotonic() - started
            if stopped:
                call.outcome = f"no exit after {elapsed:.1f} s: stopped waiting"
            else:
                call.outcome = "no exit status" if status is None else f"exit {status}"
                if left_open:
                    call.outcome += (
                        f", its output still open {OUTPUT_END_GRACE:g} s after: a process it "
                        "started holds it (redirect that process's output)"
                    )
        if too_much:
            raise PermanentError(f"{label} printed more than {MAX_STDOUT} bytes")
        decode = lambda data: bytes(data).decode("utf-8", "replace")  # noqa: E731
        return status, decode(out), decode(err), elapsed, stopped

    def run_script(self, ctx):
        kind = ctx.kind
        label = f"{kind}: {self.script_path(kind)}"
        try:
            client = self.connect(ctx)
        except HostKeyRefused as exc:
            raise PermanentError(exc.message) from None
        try:
            command = self.command(ctx)
            ctx.log(f"  $ {_short(command)}")
            stdin = json.dumps(self.payload(ctx), sort_keys=True, default=str).encode()
            status, out, err, elapsed, stopped = self.execute(ctx, client, command, stdin, label)
        finally:
            client.close()
        return self.outcome(ctx, label, status, out, err, elapsed, stopped)

    def outcome(self, ctx, label, status, out, err, elapsed, stopped):
        """The script's exit and output as a Result, or the error it means."""
        parsed = None
        if status == 0 and out.strip():
            try:
                parsed = json.loads(out)
            except ValueError:
                parsed = None
            else:
                ctx.secrets_in(parsed)  # its passwords never reach the log or an error
                details = parsed.get("details") if isinstance(parsed, dict) else None
                for key, value in (details or {}).items() if isinstance(details, dict) else ():
                    if is_secret_key(key, ctx.secret_keys) and isinstance(value, (str, int)):
                        ctx.secret(str(value))
        if out.strip():
            ctx.log("  stdout: " + _short(out.strip()).replace("\n", "\n  stdout: "))
        if err.strip():
            ctx.log("  stderr: " + _short(err.strip()).replace("\n", "\n  stderr: "))
        said = f": {_tail(err)}" if err.strip() else " (nothing on standard error)"
        limit = self.time_limit()
        if stopped:
            raise TemporaryError(
                f"{label} did not end within {self.wait_limit():g} s (time limit {limit:g} s): "
                "Provisor stopped waiting"
                + (
                    ""
                    if self.config.get("server_time_limit", True)
                    else " (it may still be running on the server)"
                )
                + said
            )
        if status is None:
            raise TemporaryError(
                f"{label} ended without an exit status (killed by a signal?){said}"
            )
        if (
            status == TIMEOUT_EXIT
            and self.config.get("server_time_limit", True)
            and elapsed >= limit - 0.5
        ):
            raise TemporaryError(
                f"{label} ran past its time limit of {limit:g} s and was stopped on the server"
            )
        if status == EX_TEMPFAIL:
            raise TemporaryError(f"{label} failed temporarily (exit 75){said}")
        if status != 0:
            hint = " (not found, or timeout(1) missing?)" if status == 127 else ""
            raise PermanentError(f"{label} failed (exit {status}){hint}{said}")
        if not out.strip():
            if ctx.kind == "open":
                raise PermanentError(
                    f'{label} exited 0 but printed nothing: open must print {{"remote_id": '
                    '"...", "details": {...}}'
                )
            return Result.done()
        if not isinstance(parsed, dict):
            raise PermanentError(
                f"{label} exited 0 but its standard output is not the JSON answer "
                f'{{"remote_id", "details"}}: {_short(out.strip(), 200)!r}'
            )
        remote_id = parsed.get("remote_id")
        details = parsed.get("details") or {}
        data = parsed.get("data") or {}
        problems = []
        if remote_id is not None and not isinstance(remote_id, (str, int)):
            problems.append("remote_id is not a text")
        if ctx.kind == "open" and remote_id in (None, ""):
            problems.append("open must name a remote_id")
        if not isinstance(details, dict) or not all(
            isinstance(v, (str, int, float, bool)) or v is None for v in details.values()
        ):
            problems.append("details is not an object of texts and numbers")
        if not isinstance(data, dict):
            problems.append("data is not an object")
        expires_at = parsed.get("expires_at")
        if problems:
            raise PermanentError(f"{label} answered, but {'; '.join(problems)}")
        try:
            return Result.done(
                remote_id=remote_id if remote_id not in ("",) else None,
                details={k: "" if v is None else str(v) for k, v in details.items()},
                data=data,
                expires_at=expires_at,
            )
        except (TypeError, ValueError):
            raise PermanentError(
                f"{label} answered an expires_at that is not an ISO 8601 date: {expires_at!r}"
            ) from None

    # --- the operations ---------------------------------------------------------------------

    def open(self, ctx):
        return self.run_script(ctx)

    def suspend(self, ctx):
        return self.run_script(ctx)

    def resume(self, ctx):
        return self.run_script(ctx)

    def close(self, ctx):
        return self.run_script(ctx)

    def change_tariff(self, ctx):
        return self.run_script(ctx)

    def renew(self, ctx):
        return self.run_script(ctx)

    def ensure_item(self, ctx):
        return self.run_script(ctx)

    # --- Test connection ------------------------------------------------------------------

    def check_config(self):
        """Connects (pinning the host key when none is pinned), logs in, and checks that
        each operation's script is there and executable (and timeout(1), when used)."""
        started = time.monotonic()
        quiet = QuietLog()
        try:
            client = self.connect(quiet, learn=True)
        except HostKeyRefused as exc:
            raise ConfigProblem(exc.message, field="host_key") from None
        except (TemporaryError, PermanentError) as exc:
            raise ConfigProblem(str(exc), field=self._field_of(str(exc))) from None
        seen = client.seen_host_key
        try:
            paths = {kind: self.script_path(kind) for kind in OPERATIONS}
            probe = "; ".join(
                f"if [ -x {shlex.quote(p)} ] && [ -f {shlex.quote(p)} ]; then echo ok {k}; "
                f"elif [ -e {shlex.quote(p)} ]; then echo notexec {k}; else echo missing {k}; fi"
                for k, p in paths.items()
            )
            if self.config.get("server_time_limit", True):
                probe += "; command -v timeout >/dev/null 2>&1 && echo ok timeout || echo missing timeout"
            status, out, err, _, _ = self.execute(quiet, client, probe, b"", "check the scripts")
        except (TemporaryError, PermanentError) as exc:
            raise ConfigProblem(f"logged in, but {exc}", field="host") from None
        finally:
            client.close()
        if status != 0:
            raise ConfigProblem(
                f"logged in, but the check of the scripts failed (exit {status}): "
                f"{_tail(err or out, 300)}",
                field="scripts_dir",
            )
        states = {}
        for line in out.splitlines():
            state, _, what = line.partition(" ")
            states[what] = state
        if states.get("timeout") == "missing":
            raise ConfigProblem(
                "timeout(1) is not on the server's PATH: install coreutils, or turn "
                "server_time_limit off",
                field="server_time_limit",
            )
        bad = [(k, states.get(k, "missing")) for k in OPERATIONS if states.get(k) != "ok"]
        if bad:
            own = [k for k, _ in bad if (self.config.get(f"script_{k}") or "").strip()]
            words = ", ".join(
                f"{paths[k]} ({'not executable' if s == 'notexec' else 'missing'})" for k, s in bad
            )
            raise ConfigProblem(
                f"logged in, but these scripts are not there: {words}. Every operation runs "
                "its script (one with nothing to do can be /bin/true)",
                field=f"script_{own[0]}" if own else "scripts_dir",
            )
        if not self.config.get("host_key") and seen:
            self.config_updates = {"host_key": seen}
        elapsed = (time.monotonic() - started) * 1000
        pinned = (
            f"host key {seen} pinned"
            if not self.config.get("host_key")
            else f"host key {seen or self.config.get('host_key')} as pinned"
        )
        return (
            f"logged in to {self.target()} ({elapsed:.0f} ms), {pinned}; the {len(OPERATIONS)} "
            "scripts are there and executable"
        )

    def _field_of(self, message):
        lowered = message.lower()
        if "host key" in lowered:
            return "host_key"
        if "refused the login" in lowered:
            return "private_key" if self.config.get("private_key") else "password"
        if "private key" in lowered:
            return "private_key"
        if "did not answer" in lowered:
            return "connect_timeout"
        return "host"


def _env_part(name):
    """An order field's or a setting's name as part of an environment variable's name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", str(name)).upper()[:60]
