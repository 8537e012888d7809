"""A strict simulator of the Proxmox VE REST API (``/api2/json``), over HTTPS on loopback.

Built by hand from Proxmox's published documentation, not from its code:

- "Proxmox VE API", https://pve.proxmox.com/wiki/Proxmox_VE_API (base URL
  ``https://HOST:8006/api2/json``, API tokens in ``Authorization: PVEAPIToken=USER@REALM!
  TOKENID=SECRET``, form-encoded parameters, answers ``{"data": ...}``, errors as the HTTP
  status whose reason phrase carries the message, parameter errors as ``{"data": null,
  "errors": {"param": "message"}}`` with status 400 "Parameter verification failed.");
- the API viewer, https://pve.proxmox.com/pve-docs/api-viewer/ (the endpoints below, their
  parameters, types and returns: ``GET /version``, ``GET /nodes``, ``GET /cluster/nextid``,
  ``GET /cluster/resources``, ``/nodes/{node}/qemu/{vmid}/config`` (GET, PUT, POST),
  ``POST .../clone``, ``PUT .../resize``, ``POST .../status/{start,stop,shutdown,suspend,
  resume}``, ``GET .../status/current``, ``DELETE /nodes/{node}/qemu/{vmid}``,
  ``GET .../agent/network-get-interfaces``, ``GET /nodes/{node}/tasks/{upid}/status`` and
  ``.../log``);
- the administration guide's chapters "qm" (templates and clones, ``qm template``,
  cloud-init: ``ciuser``, ``cipassword``, ``ipconfig0``; the QEMU guest agent) and "User
  Management" (API tokens, privileges such as ``VM.Clone``, ``VM.Allocate``,
  ``VM.Config.*``, ``VM.PowerMgmt``, ``Sys.Audit``), https://pve.proxmox.com/pve-docs/.

What it holds: nodes, VMs (templates among them) with their configuration, disk sizes and
run state, and tasks (UPIDs) that take ``task_seconds`` to finish, with their logs. It is
strict: an unknown path is ``501 Method '... ' not implemented``; a missing, unknown or
ill-typed parameter ``400 Parameter verification failed.`` with the parameter named; a
missing or wrong token ``401``; a privilege the token lacks ``403 Permission check failed
(path, privilege)``; what Proxmox refuses at run time (an id taken, a locked VM, a VM that
does not exist, shrinking a disk) a ``500`` whose reason phrase is the message. Where the
documentation does not give the exact words of a run-time error, the words here are the
simulator's own (the module never depends on them beyond "already exists").

Faults the tests switch on (``fault``): ``"slow"`` (each answer waits ``slow_seconds``),
``"garbage"`` (200 with an HTML page), ``"error"`` (every call a 500 in the documented
form, ``error_text``); :meth:`ProxmoxSimulator.stop` makes it unreachable. ``steal_ids``
makes someone else take the id ``/cluster/nextid`` just gave (a concurrent allocation).
"""

import copy
import json
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

API = "/api2/json"
GIB = 1024**3
DISK_KEY = re.compile(r"^(scsi|virtio|sata|ide)\d{1,2}$")
NET_KEY = re.compile(r"^net\d$")
DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*$"
)
TAGS = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*(;[a-z0-9_][a-z0-9_\-+.]*)*$", re.I)
SIZE = re.compile(r"^(\+?)(\d+(?:\.\d+)?)([KMGT]?)$")
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
TOKEN = re.compile(r"^PVEAPIToken=([^@\s!]+@[^!\s]+![A-Za-z][A-Za-z0-9._-]*)=(\S+)$")
UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9-]+):[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:[a-z]+:[^:]*:[^:]+:$"
)

MISSING = "property is missing and it is not optional"
UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"


class Refused(Exception):
    """An answer other than 200: status, reason phrase, optional ``errors``."""

    def __init__(self, status, reason, errors=None):
        super().__init__(reason)
        self.status, self.reason, self.errors = status, reason, errors


def _integer(value, minimum=None, maximum=None):
    if not re.match(r"^[+-]?\d+$", value):
        raise ValueError(f"type check ('integer') failed - got '{value}'")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"value must have a minimum value of {minimum}")
    if maximum is not None and number > maximum:
        raise ValueError(f"value must have a maximum value of {maximum}")
    return number


def _boolean(value):
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"type check ('boolean') failed - got '{value}'")


def integer(minimum=None, maximum=None):
    return lambda v: _integer(v, minimum, maximum)


def string(pattern=None, max_length=None, what="string"):
    def check(value):
        if max_length is not None and len(value) > max_length:
            raise ValueError(f"value may only be {max_length} characters long")
        if pattern is not None and not pattern.match(value):
            raise ValueError(f"value does not match the regex pattern or is not a valid {what}")
        return value

    return check


def enum(*values):
    def check(value):
        if value not in values:
            raise ValueError(
                f"value '{value}' does not have a value in the enumeration '{', '.join(values)}'"
            )
        return value

    return check


def ipconfig(value):
    """``[ip=<IPv4/CIDR|dhcp>][,gw=<IPv4>][,ip6=<IPv6/CIDR|dhcp|auto>][,gw6=<IPv6>]``."""
    import ipaddress

    keys = {
        "ip": lambda v: v == "dhcp" or ipaddress.IPv4Interface(v),
        "gw": ipaddress.IPv4Address,
        "ip6": lambda v: v in ("dhcp", "auto") or ipaddress.IPv6Interface(v),
        "gw6": ipaddress.IPv6Address,
    }
    for part in value.split(","):
        key, _, item = part.partition("=")
        try:
            keys[key](item)
        except (KeyError, ValueError):
            raise ValueError(
                f"value does not match the format of pve-qm-ipconfig: {part!r}"
            ) from None
    return value


VMID = integer(100, 999999999)
NODE = string(re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$"), what="node name")
BOOL = _boolean

# the parameters each endpoint takes: name -> (check, required)
CONFIG_PARAMS = {
    "name": (string(DNS_NAME, what="dns-name"), False),
    "description": (string(max_length=8192), False),
    "tags": (string(TAGS, what="pve-tag-list"), False),
    "cores": (integer(1, 8192), False),
    "sockets": (integer(1, 4), False),
    "memory": (integer(16), False),
    "agent": (string(re.compile(r"^(0|1|enabled=[01].*)$")), False),
    "onboot": (BOOL, False),
    "ciuser": (string(re.compile(r"^\S+$")), False),
    "cipassword": (string(), False),
    "sshkeys": (string(), False),
    "ipconfig0": (ipconfig, False),
    "nameserver": (string(), False),
    "searchdomain": (string(), False),
    "digest": (string(re.compile(r"^[a-f0-9]{40}$")), False),
    "delete": (string(), False),
}
ENDPOINTS = {
    ("GET", "version"): {},
    ("GET", "nodes"): {},
    ("GET", "cluster/nextid"): {"vmid": (VMID, False)},
    ("GET", "cluster/resources"): {"type": (enum("vm", "storage", "node", "sdn"), False)},
    ("GET", "qemu"): {"full": (BOOL, False)},
    ("GET", "qemu/config"): {"current": (BOOL, False), "snapshot": (string(), False)},
    ("PUT", "qemu/config"): CONFIG_PARAMS,
    ("POST", "qemu/config"): CONFIG_PARAMS,
    ("POST", "qemu/clone"): {
        "newid": (VMID, True),
        "name": (string(DNS_NAME, what="dns-name"), False),
        "description": (string(max_length=8192), False),
        "full": (BOOL, False),
        "target": (NODE, False),
        "storage": (string(re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.I)), False),
        "pool": (string(), False),
        "snapname": (string(), False),
        "format": (enum("raw", "qcow2", "vmdk"), False),
        "bwlimit": (integer(0), False),
    },
    ("PUT", "qemu/resize"): {
        "disk": (string(DISK_KEY, what="disk key"), True),
        "size": (string(SIZE, what="size"), True),
        "digest": (string(), False),
        "skiplock": (BOOL, False),
    },
    ("GET", "qemu/status/current"): {},
    ("POST", "qemu/status/start"): {"timeout": (integer(0), False), "skiplock": (BOOL, False)},
    ("POST", "qemu/status/stop"): {"timeout": (integer(0), False), "skiplock": (BOOL, False)},
    ("POST", "qemu/status/shutdown"): {
        "timeout": (integer(0), False),
        "forceStop": (BOOL, False),
        "keepActive": (BOOL, False),
    },
    ("POST", "qemu/status/suspend"): {"todisk": (BOOL, False), "skiplock": (BOOL, False)},
    ("POST", "qemu/status/resume"): {"skiplock": (BOOL, False), "nocheck": (BOOL, False)},
    ("DELETE", "qemu"): {
        "purge": (BOOL, False),
        "destroy-unreferenced-disks": (BOOL, False),
        "skiplock": (BOOL, False),
    },
    ("GET", "qemu/agent/network-get-interfaces"): {},
    ("GET", "tasks/status"): {},
    ("GET", "tasks/log"): {"start": (integer(0), False), "limit": (integer(0), False)},
}
# the privilege each endpoint checks, on /vms/<vmid> (or / for the cluster-wide ones)
PRIVILEGES = {
    ("GET", "cluster/resources"): None,
    ("GET", "cluster/nextid"): None,
    ("GET", "qemu/config"): "VM.Audit",
    ("PUT", "qemu/config"): "VM.Config.Options",
    ("POST", "qemu/config"): "VM.Config.Options",
    ("POST", "qemu/clone"): "VM.Clone",
    ("PUT", "qemu/resize"): "VM.Config.Disk",
    ("GET", "qemu/status/current"): "VM.Audit",
    ("POST", "qemu/status/start"): "VM.PowerMgmt",
    ("POST", "qemu/status/stop"): "VM.PowerMgmt",
    ("POST", "qemu/status/shutdown"): "VM.PowerMgmt",
    ("POST", "qemu/status/suspend"): "VM.PowerMgmt",
    ("POST", "qemu/status/resume"): "VM.PowerMgmt",
    ("DELETE", "qemu"): "VM.Allocate",
    ("GET", "qemu/agent/network-get-interfaces"): "VM.Monitor",
}


class ProxmoxSimulator:
    """A simulated Proxmox VE cluster (one node by default) on a free loopback port."""

    def __init__(self, cert_file, key_file, token_id="provisor@pve!ci", secret=None, node="pve"):
        import uuid

        self.cert_file, self.key_file = cert_file, key_file
        self.token_id = token_id
        self.secret = secret or str(uuid.uuid4())
        self.nodes = [node]
        self.vms = {}  # vmid -> {"node", "config", "template", "status", "paused", "lock", ...}
        self.tasks = {}  # upid -> task
        self.denied = set()  # privileges the token lacks
        self.task_seconds = 0.3
        # a task answers "running" to its first ``running_reads`` status reads even when its
        # time is up (a busy host): a test that must see a poll does not race the clock
        self.running_reads = 0
        self.agent_seconds = 0.3  # the guest agent answers this long after the start
        self.fault = None
        self.slow_seconds = 5.0
        self.error_text = "cfs-lock 'file-user_cfg' error: got lock request timeout"
        self.fail_tasks = {}  # task type -> exit status of its next run
        self.steal_ids = 0
        self.requests = []  # (method, path) of every call, in order
        self.lock = threading.RLock()
        self._task_counter = 0
        self._ip_counter = 10
        self.server = None
        self.port = None

    # --- running ------------------------------------------------------------------------

    def start(self):
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                sim._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    # --- what the tests set up and look at ----------------------------------------------

    def add_vm(self, vmid, name, template=False, disk_gib=2, cloudinit=True, node=None, **config):
        with self.lock:
            conf = {
                "name": name,
                "cores": 1,
                "memory": 512,
                "scsihw": "virtio-scsi-pci",
                "scsi0": f"local-lvm:base-{vmid}-disk-0,size={disk_gib}G",
                "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
                "agent": "1",
                **config,
            }
            if cloudinit:
                conf["ide2"] = f"local-lvm:vm-{vmid}-cloudinit,media=cdrom"
            self.vms[int(vmid)] = {
                "node": node or self.nodes[0],
                "config": conf,
                "template": bool(template),
                "status": "stopped",
                "paused": False,
                "lock": None,
                "started_at": None,
                "ip": None,
            }

    def vm(self, vmid):
        with self.lock:
            found = self.vms.get(int(vmid))
            return copy.deepcopy(found) if found else None

    def find(self, text):
        """``[(vmid, vm)]`` of the VMs whose description holds ``text``."""
        with self.lock:
            return [
                (vmid, copy.deepcopy(vm))
                for vmid, vm in sorted(self.vms.items())
                if text in (vm["config"].get("description") or "")
            ]

    def disk_gib(self, vmid, disk="scsi0"):
        with self.lock:
            return self._size(self.vms[int(vmid)]["config"][disk]) / GIB

    def task_log(self, upid):
        with self.lock:
            return list(self.tasks[upid]["log"])

    # --- the HTTP side ------------------------------------------------------------------

    def _serve(self, handler):
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        with self.lock:
            self.requests.append((handler.command, parts.path))
            fault = self.fault
        if fault == "slow":
            time.sleep(self.slow_seconds)
        if fault == "garbage":
            page = b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"
            return self._send(handler, 200, "OK", page, "text/html")
        try:
            if fault == "error":
                raise Refused(500, self.error_text)
            data = self._route(handler, parts, body)
        except Refused as exc:
            payload = {"data": None}
            if exc.errors:
                payload["errors"] = exc.errors
            return self._send(handler, exc.status, exc.reason, json.dumps(payload).encode())
        return self._send(handler, 200, "OK", json.dumps({"data": data}).encode())

    @staticmethod
    def _send(handler, status, reason, payload, kind="application/json;charset=UTF-8"):
        handler.send_response(status, reason.replace("\n", " "))
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(payload)))
        handler.send_header("Server", "pve-api-daemon/3.0")
        handler.end_headers()
        handler.wfile.write(payload)

    def _route(self, handler, parts, body):
        method = handler.command
        if not parts.path.startswith(API + "/"):
            raise Refused(501, f"Method '{method} {parts.path}' not implemented")
        path = parts.path[len(API) :]
        self._authenticate(handler)
        segments = [unquote(s) for s in path.strip("/").split("/")]
        key, args = self._match(method, segments)
        if key is None:
            raise Refused(501, f"Method '{method} {path}' not implemented")
        params = self._params(handler, parts, body, method)
        cleaned = self._verify(ENDPOINTS[key], params, args)
        with self.lock:
            self._authorize(key, args)
            return getattr(
                self, "_" + key[1].replace("/", "_").replace("-", "_") + "_" + method.lower()
            )(args, cleaned)

    def _authenticate(self, handler):
        header = handler.headers.get("Authorization")
        if not header:
            raise Refused(401, "No ticket")
        found = TOKEN.match(header.strip())
        if not found or found.group(1) != self.token_id or found.group(2) != self.secret:
            raise Refused(401, "authentication failure")

    @staticmethod
    def _match(method, segments):
        """The endpoint key and the path arguments (node, vmid, upid), or (None, None)."""
        args = {}
        if segments in (["version"], ["nodes"]):
            return ((method, segments[0]) if method == "GET" else None), args
        if (
            len(segments) == 2
            and segments[0] == "cluster"
            and segments[1] in ("nextid", "resources")
        ):
            key = (method, "/".join(segments))
            return (key if key in ENDPOINTS else None), args
        if len(segments) < 3 or segments[0] != "nodes":
            return None, None
        args["node"] = segments[1]
        rest = segments[2:]
        if rest[0] == "tasks" and len(rest) == 3:
            args["upid"] = rest[1]
            key = (method, f"tasks/{rest[2]}")
            return (key if key in ENDPOINTS else None), args
        if rest[0] != "qemu":
            return None, None
        if len(rest) == 1:
            key = (method, "qemu")
            return (key if method == "GET" else None), args
        args["vmid"] = rest[1]
        tail = "/".join(rest[2:])
        key = (method, "qemu" + ("/" + tail if tail else ""))
        return (key if key in ENDPOINTS else None), args

    @staticmethod
    def _params(handler, parts, body, method):
        """Query parameters (GET, DELETE) or the form-encoded body (POST, PUT)."""
        try:
            if method in ("GET", "DELETE"):
                return dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False))
            kind = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
            if body and kind != "application/x-www-form-urlencoded":
                raise Refused(415, f"Unsupported content type '{kind}'")
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            raise Refused(
                400, "Parameter verification failed.", {"body": "unable to parse"}
            ) from None
        seen = {}
        for name, value in pairs:
            if name in seen:
                raise Refused(400, "Parameter verification failed.", {name: "duplicate parameter"})
            seen[name] = value
        return seen

    @staticmethod
    def _verify(schema, params, args):
        errors, cleaned = {}, {}
        if "vmid" in args:
            try:
                args["vmid"] = VMID(args["vmid"])
            except ValueError as exc:
                errors["vmid"] = str(exc)
        if "node" in args:
            try:
                NODE(args["node"])
            except ValueError as exc:
                errors["node"] = str(exc)
        for name in params:
            if name not in schema:
                errors[name] = UNKNOWN
        for name, (check, required) in schema.items():
            if name not in params:
                if required:
                    errors[name] = MISSING
                continue
            try:
                cleaned[name] = check(params[name])
            except ValueError as exc:
                errors[name] = str(exc)
        if errors:
            raise Refused(400, "Parameter verification failed.", errors)
        return cleaned

    def _authorize(self, key, args):
        privilege = PRIVILEGES.get(key)
        if privilege and privilege in self.denied:
            raise Refused(403, f"Permission check failed (/vms/{args.get('vmid')}, {privilege})")

    # --- the cluster state behind the endpoints -----------------------------------------

    def _tick(self):
        """Finish the tasks whose time is up (their effect happens then)."""
        now = time.monotonic()
        for task in self.tasks.values():
            if (
                task["status"] == "running"
                and now >= task["ends_at"]
                and task["status_reads"] >= self.running_reads
            ):
                failure = task.pop("failure", None)
                if failure:
                    task["log"].append(f"TASK ERROR: {failure}")
                    task["exitstatus"] = failure
                    undo = task.pop("undo", None)
                    if undo:
                        undo()
                else:
                    task["finish"]()
                    task["log"].append("TASK OK")
                    task["exitstatus"] = "OK"
                task["status"] = "stopped"
                task["endtime"] = int(time.time())

    def _task(self, kind, vmid, node, finish, lines=(), undo=None):
        self._task_counter += 1
        start = int(time.time())
        upid = (
            f"UPID:{node}:{4096 + self._task_counter:08X}:{self._task_counter * 7919:08X}:"
            f"{start:08X}:{kind}:{vmid}:{self.token_id.split('!')[0]}!{self.token_id.split('!')[1]}:"
        )
        task = {
            "upid": upid,
            "node": node,
            "type": kind,
            "id": str(vmid),
            "user": self.token_id,
            "starttime": start,
            "status": "running",
            "ends_at": time.monotonic() + self.task_seconds,
            "finish": finish,
            "log": list(lines),
            "status_reads": 0,
        }
        if kind in self.fail_tasks:
            task["failure"] = self.fail_tasks.pop(kind)
            task["undo"] = undo
        self.tasks[upid] = task
        return upid

    def _own(self, args, allow_template=True):
        self._tick()
        vmid, node = args["vmid"], args["node"]
        self._node(node)
        vm = self.vms.get(vmid)
        if vm is None or vm["node"] != node:
            raise Refused(
                500, f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
            )
        return vm

    def _node(self, node):
        if node not in self.nodes:
            raise Refused(595, f"no such cluster node '{node}'")

    @staticmethod
    def _unlocked(vm):
        if vm["lock"]:
            raise Refused(500, f"VM is locked ({vm['lock']})")

    @staticmethod
    def _size(volume):
        found = re.search(r"size=(\d+(?:\.\d+)?)([KMGT]?)", volume)
        return int(float(found.group(1)) * UNITS[found.group(2)]) if found else 0

    def _state(self, vm):
        if vm["status"] == "stopped":
            return "stopped"
        return "paused" if vm["paused"] else "running"

    # --- endpoints: name _<path>_<method>(args, params) ---------------------------------

    def _version_get(self, args, params):
        return {"version": "8.2.4", "release": "8.2", "repoid": "faa83925c9641325"}

    def _nodes_get(self, args, params):
        return [
            {"node": n, "status": "online", "type": "node", "id": f"node/{n}"} for n in self.nodes
        ]

    def _cluster_nextid_get(self, args, params):
        self._tick()
        if "vmid" in params:
            if params["vmid"] in self.vms:
                raise Refused(
                    400,
                    "Parameter verification failed.",
                    {"vmid": f"VM {params['vmid']} already exists"},
                )
            return params["vmid"]
        vmid = 100
        while vmid in self.vms:
            vmid += 1
        if self.steal_ids > 0:  # another client clones to the same id first
            self.steal_ids -= 1
            self.add_vm(vmid, f"someone-else-{vmid}")
        return str(vmid)  # a string in the JSON answer, as Proxmox sends it

    def _cluster_resources_get(self, args, params):
        self._tick()
        if params.get("type") not in (None, "vm"):
            return []
        found = []
        for vmid, vm in sorted(self.vms.items()):
            conf = vm["config"]
            entry = {
                "id": f"qemu/{vmid}",
                "type": "qemu",
                "vmid": vmid,
                "name": conf.get("name", f"VM {vmid}"),
                "node": vm["node"],
                "status": vm["status"],
                "template": 1 if vm["template"] else 0,
                "maxcpu": conf.get("cores", 1),
                "maxmem": conf.get("memory", 512) * 1024**2,
                "maxdisk": self._size(conf.get("scsi0", "")),
            }
            if conf.get("tags"):
                entry["tags"] = conf["tags"]
            if vm["lock"]:
                entry["lock"] = vm["lock"]
            found.append(entry)
        return found

    def _qemu_get(self, args, params):
        self._tick()
        self._node(args["node"])
        return [
            {
                "vmid": vmid,
                "name": vm["config"].get("name"),
                "status": vm["status"],
                "template": 1 if vm["template"] else None,
            }
            for vmid, vm in sorted(self.vms.items())
            if vm["node"] == args["node"]
        ]

    def _qemu_config_get(self, args, params):
        vm = self._own(args)
        conf = dict(vm["config"])
        if vm["template"]:
            conf["template"] = 1
        if vm["lock"]:
            conf["lock"] = vm["lock"]
        conf["digest"] = format(abs(hash(json.dumps(conf, sort_keys=True))), "040x")[:40]
        return conf

    def _set_config(self, vm, params):
        self._unlocked(vm)
        for name in (params.get("delete") or "").split(","):
            if name.strip():
                vm["config"].pop(name.strip(), None)
        for name, value in params.items():
            if name in ("delete", "digest"):
                continue
            if name == "cipassword":
                value = "**********"  # Proxmox keeps only a hash of it
            if name in ("cores", "memory") and vm["status"] != "stopped":
                vm.setdefault("pending", {})[name] = value
                continue
            vm["config"][name] = value

    def _qemu_config_put(self, args, params):
        vm = self._own(args)
        self._set_config(vm, params)
        return None

    def _qemu_config_post(self, args, params):
        vm = self._own(args)
        self._unlocked(vm)
        return self._task(
            "qmconfig", args["vmid"], args["node"], lambda: self._set_config(vm, params)
        )

    def _qemu_clone_post(self, args, params):
        source = self._own(args)
        newid, node = params["newid"], params.get("target") or args["node"]
        self._node(node)
        if newid in self.vms:
            raise Refused(500, f"VM {newid} already exists on node '{self.vms[newid]['node']}'")
        full = params.get("full", not source["template"])
        if not full and not source["template"]:
            raise Refused(
                500, "Linked clone feature is not supported for this VM (it is not a template)"
            )
        if not full and "storage" in params:
            raise Refused(
                400,
                "Parameter verification failed.",
                {"storage": "parameter 'storage' not allowed for linked clones"},
            )
        conf = {
            k: v for k, v in source["config"].items() if k not in ("name", "description", "tags")
        }
        for key in list(conf):
            if DISK_KEY.match(key):
                conf[key] = re.sub(r"base-\d+-", f"vm-{newid}-", conf[key])
            if NET_KEY.match(key):
                mac = f"BC:24:11:{newid // 65536 % 256:02X}:{newid // 256 % 256:02X}:{newid % 256:02X}"
                conf[key] = re.sub(r"=([0-9A-F:]{17})", f"={mac}", conf[key])
        conf["name"] = (
            params.get("name") or f"Copy-of-VM-{source['config'].get('name', args['vmid'])}"
        )
        if "description" in params:
            conf["description"] = params["description"]
        # the new VM exists (locked) from the start of the task, as on Proxmox
        self.vms[newid] = {
            "node": node,
            "config": conf,
            "template": False,
            "status": "stopped",
            "paused": False,
            "lock": "clone",
            "started_at": None,
            "ip": None,
        }
        source["lock"] = None if source["template"] else "clone"

        def finish():
            self.vms[newid]["lock"] = None
            source["lock"] = None

        def undo():
            self.vms.pop(newid, None)
            source["lock"] = None

        kind = "qmclone"
        return self._task(
            kind,
            args["vmid"],
            args["node"],
            finish,
            [f"create {'full' if full else 'linked'} clone of drive scsi0", f"new VM {newid}"],
            undo=undo,
        )

    def _qemu_resize_put(self, args, params):
        vm = self._own(args)
        self._unlocked(vm)
        disk = params["disk"]
        if disk not in vm["config"]:
            raise Refused(500, f"disk '{disk}' does not exist")
        plus, number, unit = SIZE.match(params["size"]).groups()
        current = self._size(vm["config"][disk])
        wanted = int(float(number) * UNITS[unit]) + (current if plus else 0)
        if wanted < current:
            raise Refused(500, "shrinking disks is not supported")
        if wanted == current:
            return None
        gib = wanted / GIB

        def finish():
            text = f"{gib:g}G" if float(gib).is_integer() else f"{wanted // 1024**2}M"
            vm["config"][disk] = re.sub(r"size=[^,]+", f"size={text}", vm["config"][disk])

        # Proxmox VE 8: the resize runs as a task
        return self._task(
            "resize", args["vmid"], args["node"], finish, [f"resize {disk} to {gib:g}G"]
        )

    def _qemu_status_current_get(self, args, params):
        vm = self._own(args)
        data = {
            "vmid": args["vmid"],
            "name": vm["config"].get("name"),
            "status": vm["status"],
            "qmpstatus": self._state(vm),
            "cpus": vm["config"].get("cores", 1),
            "maxmem": vm["config"].get("memory", 512) * 1024**2,
            "agent": 1 if str(vm["config"].get("agent", "0")).startswith(("1", "enabled=1")) else 0,
        }
        if vm["template"]:
            data["template"] = 1
        if vm["lock"]:
            data["lock"] = vm["lock"]
        return data

    def _power(self, args, kind, change, lines=()):
        vm = self._own(args)
        self._unlocked(vm)
        if vm["template"]:
            raise Refused(500, "you can't start a vm if it's a template")
        return self._task(kind, args["vmid"], args["node"], lambda: change(vm), lines)

    def _qemu_status_start_post(self, args, params):
        def start(vm):
            if vm["status"] == "running":
                return
            vm.update(status="running", paused=False, started_at=time.monotonic())
            for name, value in vm.pop("pending", {}).items():
                vm["config"][name] = value
            if vm["ip"] is None:
                self._ip_counter += 1
                vm["ip"] = f"10.20.0.{self._ip_counter}"

        vm = self._own(args)
        if vm["status"] == "running":
            raise Refused(500, f"VM {args['vmid']} already running")
        return self._power(args, "qmstart", start, ["generating cloud-init ISO"])

    def _stopped(self, vm):
        vm.update(status="stopped", paused=False, started_at=None)
        for name, value in vm.pop("pending", {}).items():
            vm["config"][name] = value

    def _qemu_status_stop_post(self, args, params):
        return self._power(args, "qmstop", self._stopped)

    def _qemu_status_shutdown_post(self, args, params):
        vm = self._own(args)
        if vm["status"] != "running":
            raise Refused(500, f"VM {args['vmid']} not running")
        return self._power(args, "qmshutdown", self._stopped)

    def _qemu_status_suspend_post(self, args, params):
        vm = self._own(args)
        if vm["status"] != "running":
            raise Refused(500, f"VM {args['vmid']} not running")
        return self._power(args, "qmsuspend", lambda v: v.update(paused=True))

    def _qemu_status_resume_post(self, args, params):
        vm = self._own(args)
        if vm["status"] != "running":
            raise Refused(500, f"VM {args['vmid']} not running")
        return self._power(args, "qmresume", lambda v: v.update(paused=False))

    def _qemu_delete(self, args, params):
        vm = self._own(args)
        self._unlocked(vm)
        if vm["status"] != "stopped":
            raise Refused(500, f"VM {args['vmid']} is running - destroy failed")
        vmid = args["vmid"]
        vm["lock"] = "destroyed"
        return self._task(
            "qmdestroy",
            vmid,
            args["node"],
            lambda: self.vms.pop(vmid, None),
            [
                "purging VM from backup jobs, replication and HA"
                if params.get("purge")
                else "destroying"
            ],
        )

    def _qemu_agent_network_get_interfaces_get(self, args, params):
        vm = self._own(args)
        up = vm["status"] == "running" and not vm["paused"]
        if not up or time.monotonic() - (vm["started_at"] or 0) < self.agent_seconds:
            raise Refused(500, "QEMU guest agent is not running")
        mac = re.search(r"=([0-9A-F:]{17})", vm["config"].get("net0", "")).group(1).lower()
        return {
            "result": [
                {
                    "name": "lo",
                    "hardware-address": "00:00:00:00:00:00",
                    "ip-addresses": [
                        {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}
                    ],
                },
                {
                    "name": "eth0",
                    "hardware-address": mac,
                    "ip-addresses": [
                        {"ip-address-type": "ipv4", "ip-address": vm["ip"], "prefix": 24},
                        {
                            "ip-address-type": "ipv6",
                            "ip-address": "fe80::be24:11ff:fe00:1",
                            "prefix": 64,
                        },
                    ],
                },
            ]
        }

    def _task_of(self, args):
        self._tick()
        self._node(args["node"])
        upid = args["upid"]
        if not UPID_RE.match(upid):
            raise Refused(
                400, "Parameter verification failed.", {"upid": "unable to parse worker upid"}
            )
        task = self.tasks.get(upid)
        if task is None or task["node"] != args["node"]:
            raise Refused(500, f"no such task '{upid}'")
        return task

    def _tasks_status_get(self, args, params):
        task = self._task_of(args)
        data = {k: task[k] for k in ("upid", "node", "type", "id", "user", "starttime", "status")}
        data["pid"] = int(task["upid"].split(":")[2], 16)
        if task["status"] == "stopped":
            data["exitstatus"] = task["exitstatus"]
        task["status_reads"] += 1
        return data

    def _tasks_log_get(self, args, params):
        task = self._task_of(args)
        return [{"n": n + 1, "t": line} for n, line in enumerate(task["log"])]


def fingerprint_of(cert_file):
    """The SHA-256 fingerprint of a PEM certificate, as Proxmox shows it (AA:BB:...)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    with open(cert_file, "rb") as fh:
        cert = x509.load_pem_x509_certificate(fh.read())
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def simulated_proxmox(folder, **options):
    """A running simulator with a certificate made for it (``folder``: ca.pem, cert.pem,
    key.pem) and two templates: 9000 ``debian-12-cloud`` and 9001 ``ubuntu-2404-cloud``
    (2 GiB ``scsi0``, a cloud-init drive). ``sim.ca_pem`` and ``sim.fingerprint`` are what
    the module's settings take."""
    import os

    from tests.support import make_tls_certificate

    ca_pem = make_tls_certificate(folder, names=("localhost",), ips=("127.0.0.1",))
    sim = ProxmoxSimulator(
        os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem"), **options
    )
    sim.ca_pem = ca_pem
    sim.fingerprint = fingerprint_of(os.path.join(folder, "cert.pem"))
    sim.task_seconds = 0.2
    sim.agent_seconds = 0.2
    sim.add_vm(9000, "debian-12-cloud", template=True)
    sim.add_vm(9001, "ubuntu-2404-cloud", template=True)
    return sim.start()
