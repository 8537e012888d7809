"""The proxmox module type: virtual servers on Proxmox VE through its REST API (product
type ``vps``).

It talks to ``https://HOST:8006/api2/json`` with an API token (``Authorization:
PVEAPIToken=USER@REALM!TOKENID=SECRET``), form-encoded parameters, answers ``{"data":
...}``; errors are the HTTP status whose reason phrase carries Proxmox's message (400
"Parameter verification failed." with ``errors`` per parameter).

**A service is one VM** cloned from the tariff's template VM (the item: a template per
offered OS image), named ``<name prefix><service id>`` (``vps-42``) and described
``<owner tag>:service-<id>`` (the clone sets both), then configured (cores, memory, the tag
``<owner tag>-service-<id>``, cloud-init: user root, the generated password, DHCP or the
module's ``ipconfig``), its disk resized to the tariff's size, and started. Its address
comes from the QEMU guest agent (``agent/network-get-interfaces``).

**Take over, never duplicate.** Every attempt first looks for the service's VM in
``/cluster/resources`` (by the derived name, the derived tag or the VM id an earlier
attempt recorded) and adopts one whose description carries the service's mark; a VM of
that name without the mark is someone else's: refused, left alone. ``/cluster/nextid``
can hand two clients the same id: a clone refused with "VM N already exists" looks for
the service's VM again (another attempt of ours may have made it) and else asks for a new
id (three times in one attempt).

**Long steps poll.** Clone, resize (Proxmox VE 8), start, stop, shutdown, suspend, resume
and destroy are tasks (a UPID): the module stores the UPID in the operation's state and
returns ``Result.poll``; each check reads ``/nodes/{node}/tasks/{upid}/status`` until it is
``stopped``; an exit status other than ``OK`` is a permanent error in Proxmox's words.

**Errors.** Unreachable, a timeout, 502/503/504, a locked VM or a lock timeout, an answer
that is not the API's JSON: temporary. 400 (the parameters Proxmox names), 401 (the
token), 403 (the privilege it lacks), 501, and the 500s whose message is a refusal (an id
or a name taken, a VM that does not exist, shrinking a disk...): permanent, in Proxmox's
words. Other 500s are temporary. A TLS certificate that does not verify is permanent
(check ``ca_certificate`` / ``fingerprint``).
"""

import ipaddress
import re
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlparse

import requests
from requests.adapters import HTTPAdapter

from modules.base import (
    OWNER_TAG,
    OWNER_TAG_RULE,
    ConfigField,
    ConfigProblem,
    ModuleError,
    ModuleType,
    PerCallTimeouts,
    PermanentError,
    QuietLog,
    Result,
    TemporaryError,
    operation_password,
    pem_file,
)
from modules.http import why

API = "/api2/json"
TOKEN_ID = re.compile(r"^[^@\s!=]+@[^!\s=]+![A-Za-z][A-Za-z0-9._-]*$")
FINGERPRINT = re.compile(r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f]{64}$")
NODE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
STORAGE = re.compile(r"^[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]$")
DISK = re.compile(r"^(scsi|virtio|sata|ide)\d{1,2}$")
TEMPLATE_REF = re.compile(r"^(\d{3,9}|[A-Za-z0-9][A-Za-z0-9.-]{0,62})$")
TEMPLATE_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]{0,63})\s*(?:=\s*(\S+))?\s*$")
SIZE = re.compile(r"size=(\d+(?:\.\d+)?)([KMGT]?)")
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
GIB = 1024**3
PASSWORD_LENGTH = 20
PASSWORD_PURPOSE = "vps-root-password"
CLONE_TRIES = 3
# Proxmox answers 500 for refusals too; these words say retrying will not help
REFUSAL = re.compile(
    r"already exists|does not exist|not supported|not allowed|no such|not a template|"
    r"can't start a vm if it's a template|unable to parse|invalid|permission",
    re.I,
)


def parse_templates(text):
    """``[(name, template)]`` from the tariff's templates: one a line, ``name = template``
    (a VM id or a template VM's name) or a template alone (named after itself)."""
    found = []
    for number, line in enumerate((text or "").splitlines(), 1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        match = TEMPLATE_LINE.match(line)
        if not match:
            raise ValueError(f"line {number}: name = template (e.g. debian-12 = 9000)")
        name, ref = match.group(1), match.group(2) or match.group(1)
        if not TEMPLATE_REF.match(ref):
            raise ValueError(f"line {number}: {ref!r} is neither a VM id nor a VM name")
        if any(n == name for n, _ in found):
            raise ValueError(f"line {number}: {name} is listed twice")
        found.append((name, ref))
    return found


def size_bytes(volume):
    """The size of a disk from its configuration line (``local-lvm:vm-1-disk-0,size=8G``)."""
    found = SIZE.search(volume or "")
    return int(float(found.group(1)) * UNITS[found.group(2)]) if found else None


def gib(number):
    return f"{number / GIB:g} GiB"


@dataclass
class Plan:
    """A tariff's VM plan (its item)."""

    cores: int
    memory_mib: int
    disk_gib: int
    disk: str
    templates: list  # [(name, template: a VM id or a name)]

    def template(self, wanted):
        if not self.templates:
            raise PermanentError("the tariff's plan lists no template VM")
        if not wanted:
            return self.templates[0]
        for name, ref in self.templates:
            if name == wanted:
                return name, ref
        offered = ", ".join(n for n, _ in self.templates)
        raise PermanentError(f"the image {wanted!r} is not offered by this tariff ({offered})")


@dataclass
class Vm:
    vmid: int
    node: str
    config: dict

    @property
    def path(self):
        return f"/nodes/{quote(self.node, safe='')}/qemu/{self.vmid}"


class _PinnedAdapter(HTTPAdapter):
    """TLS checked against the pinned SHA-256 fingerprint of the node's certificate
    (Proxmox's default certificate is signed by the cluster's own CA)."""

    def __init__(self, fingerprint):
        self.fingerprint = fingerprint.replace(":", "").lower()
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["assert_fingerprint"] = self.fingerprint
        return super().init_poolmanager(*args, **kwargs)


def _failure(cls, text, status=None, said="", field="api_url"):
    exc = cls(text)
    exc.status, exc.said, exc.field = status, said, field
    return exc


class Api:
    """The API of one Proxmox VE cluster for one operation; each call is logged."""

    def __init__(self, module, ctx=None):
        self.module = module
        self.ctx = ctx if ctx is not None else QuietLog()
        self.base = module.base_url()
        self.ctx.secret(module.config.get("token_secret"))
        self.session = requests.Session()
        self.verify = True
        fingerprint = (module.config.get("fingerprint") or "").strip()
        if fingerprint:
            self.verify = False  # the fingerprint is checked instead
            self.session.mount("https://", _PinnedAdapter(fingerprint))
        elif module.config.get("ca_certificate"):
            self.verify = pem_file(module.config["ca_certificate"])
        self.session.headers.update(
            {
                "Authorization": f"PVEAPIToken={module.config.get('token_id')}="
                f"{module.config.get('token_secret')}",
                "Accept": "application/json",
            }
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.session.close()

    def get(self, path, params=None):
        return self.request("GET", path, params)

    def post(self, path, params=None):
        return self.request("POST", path, params)

    def put(self, path, params=None):
        return self.request("PUT", path, params)

    def delete(self, path, params=None):
        return self.request("DELETE", path, params)

    def request(self, method, path, params=None):
        """One API call; returns its ``data`` or raises the error the answer means."""
        seconds = self.module.call_timeout()
        in_query = method in ("GET", "DELETE")
        shown = API + path + (f"?{urlencode(params)}" if in_query and params else "")
        host = urlparse(self.base).netloc
        with self.ctx.call(method, shown) as call:
            try:
                reply = self.session.request(
                    method,
                    self.base + API + path,
                    params=params if in_query else None,
                    data=None if in_query else (params or {}),
                    timeout=seconds,
                    verify=self.verify,
                    allow_redirects=False,
                )
            except requests.exceptions.SSLError as exc:
                call.outcome = "TLS failure"
                pinned = bool((self.module.config.get("fingerprint") or "").strip())
                raise _failure(
                    PermanentError,
                    f"the TLS certificate of Proxmox at {host} does not verify "
                    f"({_tls_words(exc)}): check the module's "
                    + ("fingerprint" if pinned else "ca_certificate (or pin its fingerprint)"),
                    field="fingerprint" if pinned else "ca_certificate",
                ) from None
            except requests.Timeout:
                call.outcome = f"timeout after {seconds:g} s"
                raise _failure(
                    TemporaryError,
                    f"Proxmox at {host} did not answer within {seconds:g} s ({method} {path})",
                    field="timeout",
                ) from None
            except requests.RequestException as exc:
                call.outcome = f"connection error: {why(exc)}"
                raise _failure(
                    TemporaryError, f"cannot reach Proxmox at {host}: {why(exc)}"
                ) from None
            said = " ".join((reply.reason or "").split())[:300]
            call.outcome = f"{reply.status_code} {said}"
            body = _json(reply)
            errors = body.get("errors") if isinstance(body, dict) else None
            if isinstance(errors, dict) and errors:
                details = "; ".join(f"{k}: {v}" for k, v in sorted(errors.items()))[:500]
                call.note(details)
                said = f"{said} ({details})"
        status = reply.status_code
        if status == 200:
            if not isinstance(body, dict) or "data" not in body:
                kind = reply.headers.get("Content-Type", "?").split(";")[0]
                text = " ".join((reply.text or "").split())[:80]
                raise _failure(
                    TemporaryError,
                    f"Proxmox at {host} answered {method} {path} with something that is not "
                    f"its API's JSON ({kind}: {text!r}): a proxy in the way?",
                )
            return body["data"]
        doing = f"{method} {path}"
        if status == 401:
            raise _failure(
                PermanentError,
                f"Proxmox refused the API token ({status} {said}): check the module's "
                "token_id and token_secret",
                status,
                said,
                "token_secret",
            )
        if status == 403:
            raise _failure(
                PermanentError,
                f"Proxmox refused {doing} ({status} {said}): the token lacks that privilege",
                status,
                said,
                "token_id",
            )
        if status in (502, 503, 504) or (status >= 500 and not REFUSAL.search(said)):
            raise _failure(
                TemporaryError, f"Proxmox answered {status} to {doing}: {said}", status, said
            )
        raise _failure(PermanentError, f"Proxmox refused {doing} ({status}): {said}", status, said)


def _json(reply):
    try:
        return reply.json()
    except ValueError:
        return None


def _tls_words(exc):
    text = str(exc)
    for words in ("Fingerprints did not match", "certificate verify failed", "hostname mismatch"):
        if words in text:
            found = re.search(re.escape(words) + r"[^'\"(]*", text)
            return found.group(0).strip(" ,.:") if found else words
    return exc.__class__.__name__


class ProxmoxModule(PerCallTimeouts, ModuleType):
    id = "proxmox"
    name = "Proxmox VE (virtual servers)"
    description = (
        "A virtual server per service on Proxmox VE: cloned from the tariff's template VM, "
        "sized, cloud-init root password, started; its address from the guest agent."
    )
    operations = frozenset({"open", "suspend", "resume", "close", "change_tariff", "ensure_item"})
    product_types = ("vps",)
    client_data = ("vmid", "cores", "memory", "disk", "image", "pending_changes")
    state_secrets = {"password": PASSWORD_PURPOSE}
    default_timeout = 15.0
    CALLS_PER_ATTEMPT = 12  # the most API calls one attempt makes (open, with id races)
    config_fields = [
        ConfigField(
            "api_url",
            "API URL",
            kind="url",
            required=True,
            help="A node of the cluster, e.g. https://pve1.example.net:8006",
        ),
        ConfigField(
            "token_id",
            "API token id",
            required=True,
            help="USER@REALM!TOKENID, e.g. provisor@pve!provisor (Datacenter → Permissions "
            "→ API Tokens).",
        ),
        ConfigField("token_secret", "API token secret", kind="secret", required=True),
        ConfigField(
            "node",
            "Node",
            required=True,
            default="pve",
            help="The node new VMs are made on (the clone's target).",
        ),
        ConfigField(
            "ca_certificate",
            "CA certificate",
            kind="text",
            help="PEM of the CA that signed the node's certificate (the cluster's "
            "/etc/pve/pve-root-ca.pem); empty: the system's CAs.",
        ),
        ConfigField(
            "fingerprint",
            "Certificate fingerprint",
            help="The SHA-256 fingerprint of the node's certificate (Node → System → "
            "Certificates), AA:BB:…: pinned instead of checking a CA.",
        ),
        ConfigField(
            "clone_mode",
            "Clone",
            kind="choice",
            default="full",
            options=(
                ("full", "full copy of the template's disks"),
                ("linked", "linked clone (instant; the template's storage must support it)"),
            ),
        ),
        ConfigField(
            "storage",
            "Target storage",
            help="Full clones: the storage of the new disks (e.g. local-lvm); empty: the "
            "template's.",
        ),
        ConfigField(
            "ipconfig",
            "Network (cloud-init ipconfig0)",
            default="ip=dhcp",
            help="ip=dhcp, or a fixed pattern your network manages otherwise.",
        ),
        ConfigField(
            "suspend_mode",
            "Suspension",
            kind="choice",
            default="pause",
            options=(
                ("pause", "pause the VM (status/suspend; memory kept)"),
                ("shutdown", "shut it down (forced off after the timeout; resume starts it)"),
            ),
        ),
        ConfigField(
            "shutdown_timeout",
            "Force off after (s)",
            kind="int",
            default=60,
            minimum=0,
            maximum=3600,
        ),
        ConfigField(
            "ip_wait",
            "Wait for an address (s)",
            kind="int",
            default=300,
            minimum=0,
            maximum=86400,
            help="How long open waits for the guest agent to report an address before it "
            "finishes without one.",
        ),
        ConfigField(
            "client_console",
            "Console link for clients",
            kind="bool",
            default=False,
            help="Give clients the noVNC console link of their VM as the control panel URL "
            "(they need a Proxmox user with VM.Console on it).",
        ),
        ConfigField(
            "poll_interval",
            "Check every (s)",
            kind="float",
            default=5.0,
            minimum=0.2,
            maximum=600,
        ),
        ConfigField(
            "name_prefix",
            "Name prefix",
            default="vps-",
            help="VMs are named <prefix><service id> (vps-42) unless the order gives a "
            "hostname. Up to 16 lowercase letters, digits and -.",
        ),
        ConfigField(
            "owner_tag",
            "Owner tag",
            default="provisor",
            help="VMs are described <tag>:service-<id> and tagged <tag>-service-<id>. Each "
            "Provisor sharing a cluster needs its own tag.",
        ),
        ConfigField(
            "timeout",
            "Timeout (s)",
            kind="float",
            default=15.0,
            minimum=1,
            maximum=300,
            help="For each API call.",
        ),
    ]
    item_fields = [
        ConfigField(
            "templates",
            "Template VMs",
            kind="text",
            required=True,
            help="The images a client chooses from (order field os_image), one a line: "
            "name = template VM (its id or name), e.g. debian-12 = 9000; the first is the "
            "default.",
        ),
        ConfigField("cores", "Cores", kind="int", default=1, minimum=1, maximum=512),
        ConfigField(
            "memory_mib", "Memory (MiB)", kind="int", default=1024, minimum=64, maximum=4194304
        ),
        ConfigField("disk_gib", "Disk (GiB)", kind="int", default=20, minimum=1, maximum=65536),
        ConfigField(
            "disk",
            "Disk to resize",
            default="scsi0",
            help="The template's system disk (scsi0, virtio0...).",
        ),
    ]

    # --- settings -----------------------------------------------------------------------

    @classmethod
    def validate_config(cls, data):
        cleaned, errors = super().validate_config(data)
        url = cleaned.get("api_url") or ""
        if "api_url" not in errors and url and not url.startswith("https://"):
            errors["api_url"] = "Proxmox VE serves its API over HTTPS: https://HOST:8006"
        token = cleaned.get("token_id")
        if "token_id" not in errors and token and not TOKEN_ID.match(token):
            errors["token_id"] = "USER@REALM!TOKENID, e.g. provisor@pve!provisor."
        node = cleaned.get("node")
        if "node" not in errors and node and not NODE.match(node):
            errors["node"] = "A node name: letters, digits and - (e.g. pve1)."
        fingerprint = cleaned.get("fingerprint")
        if "fingerprint" not in errors and fingerprint and not FINGERPRINT.match(fingerprint):
            errors["fingerprint"] = "A SHA-256 fingerprint: 32 hex pairs separated by colons."
        ca = cleaned.get("ca_certificate")
        if "ca_certificate" not in errors and ca and "BEGIN CERTIFICATE" not in ca:
            errors["ca_certificate"] = "A PEM certificate (-----BEGIN CERTIFICATE-----)."
        storage = cleaned.get("storage")
        if "storage" not in errors and storage and not STORAGE.match(storage):
            errors["storage"] = "A storage id, e.g. local-lvm."
        prefix = cleaned.get("name_prefix")
        if "name_prefix" not in errors and prefix and not NAME_PREFIX.match(prefix):
            errors["name_prefix"] = (
                "A lowercase letter, then up to 15 lowercase letters, digits and - (vps-)."
            )
        tag = cleaned.get("owner_tag")
        if "owner_tag" not in errors and tag and not OWNER_TAG.match(tag):
            errors["owner_tag"] = OWNER_TAG_RULE
        return cleaned, errors

    @classmethod
    def validate_item(cls, data):
        cleaned, errors = super().validate_item(data)
        if "templates" not in errors:
            try:
                if not parse_templates(cleaned.get("templates")):
                    errors["templates"] = "List at least one template VM (e.g. debian-12 = 9000)."
            except ValueError as exc:
                errors["templates"] = str(exc)
        disk = cleaned.get("disk")
        if "disk" not in errors and disk and not DISK.match(disk):
            errors["disk"] = "A disk key such as scsi0, virtio0, sata0."
        return cleaned, errors

    def io_timeout(self):
        return self.call_timeout() + 5.0

    def base_url(self):
        url = (self.config.get("api_url") or "").rstrip("/")
        return url.removesuffix(API).rstrip("/")

    def api(self, ctx=None):
        return Api(self, ctx)

    def node(self):
        return self.config.get("node") or "pve"

    def owner_tag(self):
        return self.config.get("owner_tag") or "provisor"

    def name_for(self, service_id):
        return f"{self.config.get('name_prefix') or 'vps-'}{service_id}"

    def mark(self, service_id):
        """The service's mark in its VM's description."""
        return f"{self.owner_tag()}:service-{service_id}"

    def tag(self, service_id):
        return f"{self.owner_tag()}-service-{service_id}"

    def interval(self):
        return float(self.config.get("poll_interval") or 5.0)

    def plan(self, ctx):
        settings = ctx.item_settings
        if not settings and ctx.item is not None:
            settings = ctx.item.settings
        settings = settings or {}
        try:
            templates = parse_templates(settings.get("templates"))
        except ValueError as exc:
            raise PermanentError(f"the tariff's templates: {exc}") from None
        return Plan(
            cores=int(settings.get("cores") or 1),
            memory_mib=int(settings.get("memory_mib") or 1024),
            disk_gib=int(settings.get("disk_gib") or 20),
            disk=settings.get("disk") or "scsi0",
            templates=templates,
        )

    def order_field_options(self, item_settings):
        try:
            return {
                "os_image": [n for n, _ in parse_templates((item_settings or {}).get("templates"))]
            }
        except ValueError:
            return {"os_image": []}

    # --- the pieces ---------------------------------------------------------------------

    def _await(self, api, ctx, state):
        """A Result.poll while the task in ``state`` runs; None when there is none or it
        ended well (a failed task is a PermanentError in Proxmox's words)."""
        upid = state.get("upid")
        if not upid:
            return None
        node = upid.split(":")[1] if upid.count(":") > 2 else self.node()
        status = api.get(f"/nodes/{quote(node, safe='')}/tasks/{quote(upid, safe='')}/status")
        what = state.get("task") or "the task"
        if not isinstance(status, dict) or status.get("status") not in ("running", "stopped"):
            raise TemporaryError(f"Proxmox answered an unknown task status for {what}: {status!r}")
        if status["status"] == "running":
            ctx.log(f"{what} is running")
            return Result.poll(after=self.interval(), state=state)
        exit_status = str(status.get("exitstatus") or "")
        state.pop("upid", None)
        state.pop("task", None)
        ctx.save_state(state)
        if exit_status == "OK" or exit_status.startswith("WARNINGS"):
            ctx.log(f"{what}: {exit_status}")
            return None
        raise PermanentError(f"Proxmox's task failed ({what}): {exit_status or 'no exit status'}")

    def _wait_for(self, ctx, state, upid, what):
        state.update(upid=upid, task=what)
        ctx.save_state(state)
        ctx.log(f"{what}: task {upid}")
        return Result.poll(after=self.interval(), state=state)

    def _find(self, api, ctx, state=None, strict=True):
        """The service's VM (``Vm``) or None. ``strict``: a VM of its name that is not
        the service's is a PermanentError (else it is ignored)."""
        service_id = ctx.service.id
        name, tag, mark = self.name_for(service_id), self.tag(service_id), self.mark(service_id)
        hints = {
            str(v)
            for v in (
                (state or {}).get("vmid"),
                ctx.service_data.get("vmid"),
                ctx.service.remote_id,
            )
            if v
        }
        listed = api.get("/cluster/resources", {"type": "vm"})
        if not isinstance(listed, list):
            raise TemporaryError("Proxmox answered /cluster/resources with something not a list")
        candidates = [
            r
            for r in listed
            if isinstance(r, dict)
            and r.get("type") == "qemu"
            and not r.get("template")
            and (
                r.get("name") == name
                or str(r.get("vmid")) in hints
                or tag in str(r.get("tags") or "").split(";")
            )
        ]
        foreign = []
        for found in candidates:
            vm = Vm(int(found["vmid"]), str(found["node"]), {})
            vm.config = api.get(f"{vm.path}/config") or {}
            words = re.split(r"\s+", str(vm.config.get("description") or ""))
            if mark in words:
                return vm
            if found.get("name") == name:
                foreign.append(vm)
        if foreign and strict:
            raise PermanentError(
                f"a VM named {name} (id {foreign[0].vmid} on {foreign[0].node}) exists that is "
                f"not this service's (its description lacks {mark}): left alone"
            )
        return None

    def _own(self, api, ctx, state):
        vm = self._find(api, ctx, state)
        if vm is None:
            raise PermanentError(
                f"the VM of service {ctx.service.id} ({ctx.service.remote_id or 'no id'}) is not "
                "on the cluster (deleted by hand?)"
            )
        return vm

    def _template(self, api, ref, listed=None):
        """The resource entry of the template ``ref`` (a VM id or a name)."""
        listed = listed if listed is not None else api.get("/cluster/resources", {"type": "vm"})
        vms = [r for r in listed if isinstance(r, dict) and r.get("type") == "qemu"]
        if ref.isdigit():
            found = [r for r in vms if str(r.get("vmid")) == ref]
        else:
            found = [r for r in vms if r.get("name") == ref and r.get("template")]
            found = found or [r for r in vms if r.get("name") == ref]
        if not found:
            templates = ", ".join(
                f"{r.get('vmid')} ({r.get('name')})" for r in vms if r.get("template")
            )
            raise PermanentError(
                f"there is no VM {ref} on the cluster to clone (templates there: "
                f"{templates or 'none'})"
            )
        if not found[0].get("template"):
            raise PermanentError(
                f"VM {found[0]['vmid']} ({found[0].get('name')}) is not a template: convert it "
                f"with qm template {found[0]['vmid']} (or Convert to template in the web UI)"
            )
        return found[0]

    def _status(self, api, vm):
        current = api.get(f"{vm.path}/status/current")
        if not isinstance(current, dict):
            raise TemporaryError(f"Proxmox answered no status for VM {vm.vmid}")
        return current

    def _resize(self, api, ctx, vm, plan, state):
        """Grow the disk to the plan's size: a task UPID, or None when nothing to do."""
        config = api.get(f"{vm.path}/config") or {}
        line = config.get(plan.disk)
        if line is None:
            raise PermanentError(f"VM {vm.vmid} has no disk {plan.disk} to resize")
        have, wanted = size_bytes(line), plan.disk_gib * GIB
        if have is not None and have > wanted:
            ctx.log(
                f"{plan.disk} is {gib(have)}, more than {gib(wanted)}: Proxmox cannot shrink it"
            )
            return None
        if have == wanted:
            return None
        upid = api.put(f"{vm.path}/resize", {"disk": plan.disk, "size": f"{plan.disk_gib}G"})
        return upid if isinstance(upid, str) and upid.startswith("UPID:") else None

    def _address(self, api, ctx, vm):
        """The VM's IPv4 address as its guest agent reports it (None: not yet)."""
        try:
            answer = api.get(f"{vm.path}/agent/network-get-interfaces")
        except TemporaryError as exc:
            if "agent" in getattr(exc, "said", ""):
                ctx.log(f"the guest agent does not answer yet ({exc.said})")
                return None
            raise
        for iface in (answer or {}).get("result") or []:
            for addr in iface.get("ip-addresses") or []:
                if addr.get("ip-address-type") != "ipv4":
                    continue
                try:
                    ip = ipaddress.ip_address(addr.get("ip-address"))
                except ValueError:
                    continue
                if not (ip.is_loopback or ip.is_link_local):
                    return str(ip)
        return None

    def _console(self, vm):
        return (
            f"{self.base_url()}/?console=kvm&novnc=1&vmid={vm.vmid}"
            f"&vmname={quote(str(vm.config.get('name') or ''), safe='')}&node={quote(vm.node)}"
        )

    # --- operations ---------------------------------------------------------------------

    def open(self, ctx):
        plan = self.plan(ctx)
        image, ref = plan.template((ctx.params or {}).get("os_image"))
        password = operation_password(ctx, PASSWORD_PURPOSE, PASSWORD_LENGTH)
        hostname = (ctx.params or {}).get("hostname") or self.name_for(ctx.service.id)
        state = dict(ctx.state)
        with self.api(ctx) as api:
            waiting = self._await(api, ctx, state)
            if waiting is not None:
                return waiting
            vm = self._find(api, ctx, state)
            if vm is None:
                return self._clone(api, ctx, state, plan, ref)
            if state.get("vmid") != vm.vmid:
                ctx.log(f"VM {vm.vmid} on {vm.node} is this service's: taking it over")
                state.update(vmid=vm.vmid, node=vm.node)
                ctx.save_state(state)
            if vm.config.get("lock"):
                ctx.log(f"VM {vm.vmid} is locked ({vm.config['lock']}): waiting")
                return Result.poll(after=self.interval(), state=state)
            if not state.get("configured"):
                self._configure(api, ctx, vm, plan, password, hostname)
                upid = self._resize(api, ctx, vm, plan, state)
                state["configured"] = True
                if upid:
                    return self._wait_for(ctx, state, upid, f"resize of VM {vm.vmid}")
                ctx.save_state(state)
            current = self._status(api, vm)
            if current.get("status") != "running":
                upid = api.post(f"{vm.path}/status/start")
                return self._wait_for(ctx, state, upid, f"start of VM {vm.vmid}")
            address = self._address(api, ctx, vm)
            state.setdefault("running_at", time.time())
            waited = time.time() - float(state["running_at"])
            ip_wait = int(
                self.config.get("ip_wait") if self.config.get("ip_wait") is not None else 300
            )
            if address is None and waited < ip_wait:
                ctx.save_state(state)
                return Result.poll(after=self.interval(), state=state)
            if address is None:
                ctx.log(f"no address from the guest agent after {ip_wait} s: not known")
        details = {
            "hostname": hostname,
            "ip": address or "",
            "username": "root",
            "password": password,
        }
        if self.config.get("client_console"):
            details["panel_url"] = self._console(vm)
        return Result.done(
            remote_id=vm.vmid,
            details=details,
            data={
                "vmid": vm.vmid,
                "node": vm.node,
                "cores": plan.cores,
                "memory": f"{plan.memory_mib} MiB",
                "disk": f"{plan.disk_gib} GiB",
                "image": image,
                "console": self._console(vm),
                "pending_changes": "",
            },
        )

    def _clone(self, api, ctx, state, plan, ref):
        """Clone the template to a new id (another when the id was taken meanwhile)."""
        listed = api.get("/cluster/resources", {"type": "vm"})
        template = self._template(api, ref, listed)
        source = f"/nodes/{quote(str(template['node']), safe='')}/qemu/{template['vmid']}"
        name = self.name_for(ctx.service.id)
        full = (self.config.get("clone_mode") or "full") == "full"
        for _ in range(CLONE_TRIES):
            vmid = int(str(api.get("/cluster/nextid")))
            params = {
                "newid": vmid,
                "name": name,
                "description": self.mark(ctx.service.id),
                "full": 1 if full else 0,
            }
            if template["node"] != self.node():
                params["target"] = self.node()
            if full and self.config.get("storage"):
                params["storage"] = self.config["storage"]
            try:
                upid = api.post(f"{source}/clone", params)
            except ModuleError as exc:
                if "already exists" not in getattr(exc, "said", ""):
                    raise
                ctx.log(f"VM id {vmid} was taken meanwhile: looking for ours, else a new id")
                vm = self._find(api, ctx, state)
                if vm is not None:
                    state.update(vmid=vm.vmid, node=vm.node)
                    ctx.save_state(state)
                    return Result.poll(after=self.interval(), state=state)
                continue
            state.update(vmid=vmid, node=self.node())
            return self._wait_for(
                ctx,
                state,
                upid,
                f"clone of {template['vmid']} ({template.get('name')}) to VM {vmid}",
            )
        raise TemporaryError(
            f"the VM ids Proxmox offered were taken by others {CLONE_TRIES} times in a row"
        )

    def _configure(self, api, ctx, vm, plan, password, hostname):
        params = {
            "cores": plan.cores,
            "memory": plan.memory_mib,
            "tags": self.tag(ctx.service.id),
            "agent": "1",
            "ciuser": "root",
            "cipassword": ctx.secret(password),
            "ipconfig0": self.config.get("ipconfig") or "ip=dhcp",
        }
        if hostname != vm.config.get("name"):
            params["name"] = hostname
        key = ((ctx.params or {}).get("ssh_key") or "").strip()
        if key:
            params["sshkeys"] = quote(key + "\n", safe="")  # Proxmox takes them URL-encoded
        api.put(f"{vm.path}/config", params)
        ctx.log(
            f"VM {vm.vmid}: {plan.cores} cores, {plan.memory_mib} MiB, cloud-init user root with "
            "the generated password" + (" and the SSH key" if key else "")
        )

    def suspend(self, ctx):
        state = dict(ctx.state)
        with self.api(ctx) as api:
            waiting = self._await(api, ctx, state)
            if waiting is not None:
                return waiting
            vm = self._own(api, ctx, state)
            current = self._status(api, vm)
            shown = current.get("qmpstatus") or current.get("status")
            if (self.config.get("suspend_mode") or "pause") == "pause":
                if current.get("status") == "running" and shown != "paused":
                    upid = api.post(f"{vm.path}/status/suspend")
                    return self._wait_for(ctx, state, upid, f"pause of VM {vm.vmid}")
            elif current.get("status") == "running":
                limit = int(self.config.get("shutdown_timeout") or 60)
                upid = api.post(f"{vm.path}/status/shutdown", {"forceStop": 1, "timeout": limit})
                return self._wait_for(ctx, state, upid, f"shutdown of VM {vm.vmid}")
            ctx.log(f"VM {vm.vmid} is {shown}")
        return Result.done(remote_id=vm.vmid)

    def resume(self, ctx):
        state = dict(ctx.state)
        with self.api(ctx) as api:
            waiting = self._await(api, ctx, state)
            if waiting is not None:
                return waiting
            vm = self._own(api, ctx, state)
            current = self._status(api, vm)
            if current.get("status") != "running":
                upid = api.post(f"{vm.path}/status/start")
                return self._wait_for(ctx, state, upid, f"start of VM {vm.vmid}")
            if current.get("qmpstatus") == "paused":
                upid = api.post(f"{vm.path}/status/resume")
                return self._wait_for(ctx, state, upid, f"resume of VM {vm.vmid}")
            ctx.log(f"VM {vm.vmid} is running")
        return Result.done(remote_id=vm.vmid)

    def change_tariff(self, ctx):
        plan = self.plan(ctx)
        state = dict(ctx.state)
        with self.api(ctx) as api:
            waiting = self._await(api, ctx, state)
            if waiting is not None:
                return waiting
            vm = self._own(api, ctx, state)
            if not state.get("configured"):
                api.put(f"{vm.path}/config", {"cores": plan.cores, "memory": plan.memory_mib})
                upid = self._resize(api, ctx, vm, plan, state)
                state["configured"] = True
                if upid:
                    return self._wait_for(ctx, state, upid, f"resize of VM {vm.vmid}")
                ctx.save_state(state)
            running = self._status(api, vm).get("status") == "running"
        pending = (
            f"{plan.cores} cores and {plan.memory_mib} MiB apply at the next boot (the VM is "
            "running)"
            if running
            else ""
        )
        ctx.log(pending or f"VM {vm.vmid}: {plan.cores} cores, {plan.memory_mib} MiB")
        return Result.done(
            remote_id=vm.vmid,
            data={
                "cores": plan.cores,
                "memory": f"{plan.memory_mib} MiB",
                "disk": f"{plan.disk_gib} GiB",
                "pending_changes": pending,
            },
        )

    def close(self, ctx):
        state = dict(ctx.state)
        with self.api(ctx) as api:
            waiting = self._await(api, ctx, state)
            if waiting is not None:
                return waiting
            vm = self._find(api, ctx, state, strict=False)
            if vm is None:
                ctx.log(f"the VM of service {ctx.service.id} is not on the cluster (any more)")
                return Result.done(remote_id=ctx.service.remote_id)
            if vm.config.get("lock"):
                ctx.log(f"VM {vm.vmid} is locked ({vm.config['lock']}): waiting")
                return Result.poll(after=self.interval(), state=state)
            if self._status(api, vm).get("status") != "stopped":
                upid = api.post(f"{vm.path}/status/stop")
                return self._wait_for(ctx, state, upid, f"stop of VM {vm.vmid}")
            upid = api.delete(vm.path, {"purge": 1, "destroy-unreferenced-disks": 1})
            return self._wait_for(ctx, state, upid, f"destruction of VM {vm.vmid}")

    def ensure_item(self, ctx):
        """The tariff's plan can be served: each template VM exists, is a template, has
        the disk to resize (not larger than the plan's) and a cloud-init drive."""
        plan = self.plan(ctx)
        problems = []
        with self.api(ctx) as api:
            nodes = [n.get("node") for n in api.get("/nodes") or [] if isinstance(n, dict)]
            if self.node() not in nodes:
                problems.append(
                    f"the node {self.node()} is not in the cluster (nodes: {', '.join(nodes)})"
                )
            listed = api.get("/cluster/resources", {"type": "vm"})
            for _name, ref in plan.templates:
                try:
                    template = self._template(api, ref, listed)
                except PermanentError as exc:
                    problems.append(str(exc))
                    continue
                problems += self._template_problems(api, template, plan)
        if not plan.templates:
            problems.append("the tariff lists no template VM")
        if problems:
            raise PermanentError("; ".join(problems))
        ctx.log(
            "templates "
            + ", ".join(f"{n} = {r}" for n, r in plan.templates)
            + f" are ready ({plan.disk} up to {plan.disk_gib} GiB, cloud-init)"
        )
        return Result.done()

    def _template_problems(self, api, template, plan):
        vmid = template["vmid"]
        path = f"/nodes/{quote(str(template['node']), safe='')}/qemu/{vmid}"
        config = api.get(f"{path}/config") or {}
        problems = []
        line = config.get(plan.disk)
        if line is None:
            disks = ", ".join(sorted(k for k in config if DISK.match(k))) or "none"
            problems.append(f"the template {vmid} has no disk {plan.disk} (its disks: {disks})")
        elif (size_bytes(line) or 0) > plan.disk_gib * GIB:
            problems.append(
                f"the template {vmid}'s disk {plan.disk} ({gib(size_bytes(line))}) is larger "
                f"than the tariff's disk ({plan.disk_gib} GiB)"
            )
        if not any(DISK.match(k) and "cloudinit" in str(v) for k, v in config.items()):
            problems.append(
                f"the template {vmid} has no cloud-init drive (qm set {vmid} --ide2 "
                "local-lvm:cloudinit), so the root password cannot be set"
            )
        return problems

    # --- Test connection ----------------------------------------------------------------

    def check_config(self):
        started = time.monotonic()
        try:
            with self.api() as api:
                version = api.get("/version") or {}
                nodes = [n.get("node") for n in api.get("/nodes") or [] if isinstance(n, dict)]
                listed = api.get("/cluster/resources", {"type": "vm"}) or []
        except ModuleError as exc:
            raise ConfigProblem(str(exc), field=getattr(exc, "field", "api_url")) from None
        if self.node() not in nodes:
            raise ConfigProblem(
                f"the node {self.node()} is not in the cluster (nodes: {', '.join(nodes) or 'none'})",
                field="node",
            )
        templates = sum(1 for r in listed if isinstance(r, dict) and r.get("template"))
        elapsed = (time.monotonic() - started) * 1000
        return (
            f"Proxmox VE {version.get('version', '?')} answers with this token ({elapsed:.0f} ms); "
            f"node {self.node()} is there; {templates} template VM(s) on the cluster"
        )
