"""Backends for the module conformance suite (``test_conformance.py``).

Each backend is one module type and the thing it talks to, running for real: a module
type joins the suite by adding a backend here (its server started by the fixture, its
secrets, how to make it refuse, how to see what it created). ``engine`` runs operations
by hand in the test's thread (no worker), so a test can stop an attempt wherever it
wants.
"""

import contextlib
import time
import uuid

import pytest

import modules
from app.db import database, release
from app.models import Item, Operation, SandboxResource, Service
from app.services import dispatch, operations
from tests.modules.jobpanel import JobPanel, JobPanelModule
from tests.support import ModuleEndpoint


def services_to_open(module_id):
    """The services whose ``open`` the module is about to run (queued or waiting)."""
    with database.connection_context():
        ops = Operation.select().where(
            (Operation.module == module_id)
            & (Operation.kind == "open")
            & (Operation.status.in_(("queued", "retry_wait")))
        )
        return [op.service for op in ops]


class Backend:
    """What the suite needs to know of one module type and its server."""

    type_id = ""
    product_type = "vps"
    creates_remote_items = False  # ensure_item makes something on the server

    def config(self):
        """Settings that work."""
        raise NotImplementedError

    def bad_credentials(self):
        """Settings with wrong credentials, or None for a type that has none."""
        return None

    def unreachable(self):
        """Settings pointing at a server that is down or does not answer in time."""
        raise NotImplementedError

    silent_unix = False  # silent() takes a unix socket (else a loopback TCP port)

    def silent(self, server):
        """Settings pointing at ``server`` (``tests.support.SilentServer``: it accepts
        connections and never answers, a hung daemon), with short timeouts; None for a
        type that talks to no server."""
        raise NotImplementedError(f"{type(self).__name__} has no silent(): add one")

    @contextlib.contextmanager
    def refusing(self, module_id):
        """The server refuses what it is asked (invalid, taken...) while inside."""
        raise NotImplementedError
        yield

    refusal_text = ""  # the server's own words when it refuses

    def secrets(self):
        """Values that must never appear in an attempt log."""
        return []

    def objects(self, service):
        """What exists on the server for ``service``: ``[(remote_id, state)]`` where
        state is "active", "suspended" or "deleted"."""
        raise NotImplementedError

    def has_item(self, internal_name):
        return False

    def item_settings(self, bigger=False):
        """The settings of a tariff's item (``bigger``: of the tariff change_tariff moves
        to), or None for the type's defaults."""
        return None

    def close(self):
        pass


class SandboxBackend(Backend):
    """The built-in simulated panel: its "server" is the SandboxResource table."""

    type_id = "sandbox"
    creates_remote_items = True
    refusal_text = "sandbox: simulated failure"

    def config(self):
        return {}

    def unreachable(self):
        return {"fail_first": 1000}

    def silent(self, server):
        return None  # the simulated panel is in the worker's own process

    @contextlib.contextmanager
    def refusing(self, module_id):
        from app.models import ProcessingModule

        module = ProcessingModule.get_by_id(module_id)
        saved = dict(module.config)
        module.config = {**saved, "fail_first": 1000, "permanent_failures": True}
        module.save()
        try:
            yield
        finally:
            module.config = saved
            module.save()

    def objects(self, service):
        rows = SandboxResource.select().where(
            (SandboxResource.service_id == service.id) & (SandboxResource.kind == "account")
        )
        return [(r.remote_id, r.status) for r in rows]

    def has_item(self, internal_name):
        return any(
            r.details.get("package") == internal_name
            for r in SandboxResource.select().where(SandboxResource.kind == "package")
        )

    def secrets(self):
        return []


class HttpBackend(Backend):
    """The http module and a real endpoint on loopback (tests/support.ModuleEndpoint)."""

    type_id = "http"
    creates_remote_items = True
    refusal_text = "scripted 400"

    def __init__(self):
        self.endpoint = ModuleEndpoint(
            script_kinds=("open", "suspend", "resume", "close", "change_tariff", "renew")
        )
        self.endpoint.start()

    def config(self):
        return self.endpoint.config()

    def bad_credentials(self):
        return {**self.endpoint.config(), "secret": "not-the-endpoint-secret"}

    def unreachable(self):
        from tests.support import free_port

        return {"url": f"http://127.0.0.1:{free_port()}/hook", "secret": "x" * 16, "timeout": 1}

    def silent(self, server):
        return {"url": f"http://127.0.0.1:{server.port}/hook", "secret": "x" * 16, "timeout": 1}

    @contextlib.contextmanager
    def refusing(self, module_id):
        self.endpoint.script = ["400"] * 20
        try:
            yield
        finally:
            self.endpoint.script = []

    def secrets(self):
        return [self.endpoint.secret]

    def objects(self, service):
        ops = {op.id: op for op in Operation.select().where(Operation.service == service.id)}
        created = [
            (op_id, remote) for op_id, remote in self.endpoint.creations.items() if op_id in ops
        ]
        state = "active"
        for request in self.endpoint.requests:
            if request["operation_id"] in ops and request["operation"] in STATE_AFTER:
                state = STATE_AFTER[request["operation"]]
        return [(remote, state) for _, remote in created]

    def has_item(self, internal_name):
        return any(
            (r.get("item") or {}).get("internal_name") == internal_name
            for r in self.endpoint.calls("ensure_item")
        )

    def close(self):
        self.endpoint.stop()


STATE_AFTER = {"suspend": "suspended", "resume": "active", "close": "deleted"}


class JobPanelBackend(Backend):
    """A poll-based module of the tests (tests/modules/jobpanel.py) and its real panel."""

    type_id = "jobpanel"
    refusal_text = "the panel refused: the account name is taken"

    def __init__(self):
        self.panel = JobPanel(checks_needed=2).start()

    def config(self):
        return self.panel.config()

    def bad_credentials(self):
        return {**self.panel.config(), "token": "wrong-token-wrong-token"}

    def unreachable(self):
        from tests.support import free_port

        return {**self.panel.config(), "url": f"http://127.0.0.1:{free_port()}"}

    def silent(self, server):
        return {**self.panel.config(), "url": f"http://127.0.0.1:{server.port}", "timeout": 1}

    @contextlib.contextmanager
    def refusing(self, module_id):
        self.panel.refuse = "the account name is taken"
        try:
            yield
        finally:
            self.panel.refuse = None

    def secrets(self):
        return [self.panel.token]

    def objects(self, service):
        state = {"done": "active", "running": "active", "deleted": "deleted"}
        return [(j["id"], state[j["status"]]) for j in self.panel.jobs_for(f"service-{service.id}")]

    def close(self):
        self.panel.stop()


BACKENDS = {"sandbox": SandboxBackend, "http": HttpBackend, "jobpanel": JobPanelBackend}


# --- powerdns: the powerdns module and a real PowerDNS server ------------------------------


class PowerDNSBackend(Backend):
    """The powerdns module and a real pdns_server (sqlite3 backend) of the session
    (``powerdns`` fixture). Each backend has its own owner tag, so its zones are told apart
    from every other test's, and removes them at the end."""

    type_id = "powerdns"
    product_type = "dns"
    refusal_text = "belongs to account 'someone-else'"
    server = None  # the session's PowerDNS (set by _powerdns_server_for_its_backend)

    def __init__(self):
        import uuid

        self.pdns = PowerDNSBackend.server
        self.tag = f"ct-{uuid.uuid4().hex[:10]}"
        self.foreign = []  # zones refusing() made for "someone else"

    def config(self):
        return {
            "api_url": self.pdns.api_url,
            "api_key": self.pdns.api_key,
            "nameservers": "ns1.example.net, ns2.example.net",
            "owner_tag": self.tag,
            "timeout": 5,
        }

    def bad_credentials(self):
        return {**self.config(), "api_key": "not-the-powerdns-api-key"}

    def unreachable(self):
        from tests.support import free_port

        return {**self.config(), "api_url": f"http://127.0.0.1:{free_port()}", "timeout": 1}

    def silent(self, server):
        return {**self.config(), "api_url": f"http://127.0.0.1:{server.port}", "timeout": 1}

    @contextlib.contextmanager
    def refusing(self, module_id):
        """The domain the module is about to host is taken: a zone of another account."""
        domains = [service.params["domain"] for service in services_to_open(module_id)]
        for domain in domains:
            zone = domain + "."
            reply = self.pdns.api(
                "POST",
                "/zones",
                json={"name": zone, "kind": "Native", "account": "someone-else", "nameservers": []},
            )
            assert reply.status_code == 201, reply.text
            self.foreign.append(zone)
        try:
            yield
        finally:
            for zone in self.foreign:
                data = self.pdns.api("GET", f"/zones/{zone}").json()
                assert data["account"] == "someone-else"  # not taken over
                self.pdns.api("DELETE", f"/zones/{zone}")
            self.foreign = []

    def secrets(self):
        return [self.pdns.api_key]

    def objects(self, service):
        """Zones whose account says this service; active, or suspended when their SOA is
        disabled; the service's zone is "deleted" once the server no longer has it."""
        owner = f"{self.tag}:service-{service.id}"
        found = []
        for zone in self.pdns.api("GET", "/zones").json():
            if zone.get("account") == owner:
                data = self.pdns.api("GET", f"/zones/{zone['id']}").json()
                soa = [s for s in data["rrsets"] if s["type"] == "SOA"][0]
                disabled = all(r["disabled"] for r in soa["records"])
                found.append((zone["id"], "suspended" if disabled else "active"))
        gone = service.remote_id and not found
        if gone and self.pdns.api("GET", f"/zones/{service.remote_id}").status_code == 404:
            found.append((service.remote_id, "deleted"))
        return found

    def close(self):
        for zone in self.pdns.api("GET", "/zones").json():
            if (zone.get("account") or "").startswith(f"{self.tag}:"):
                self.pdns.api("DELETE", f"/zones/{zone['id']}")


BACKENDS["powerdns"] = PowerDNSBackend


# --- mariadb, postgresql: database hosting on real servers ---------------------------


class DatabaseBackend(Backend):
    """A database module type and a tenant of its real server (``tests.support``: an
    admin of its own, a name prefix, everything dropped afterwards). What exists for a
    service is its database and user: "suspended" while the user may not log in."""

    product_type = "database"
    refusal_text = "exists with the comment 'someone-else'"
    server = None  # the tenant (set by _server_for_its_backend)

    def __init__(self):
        self.tenant = type(self).server

    def config(self):
        return self.tenant.config()

    def bad_credentials(self):
        return self.tenant.config(admin_password="not-the-admin-password")

    def unreachable(self):
        from tests.support import free_port

        return self.tenant.config(port=free_port(), timeout=1)

    def silent(self, server):
        return self.tenant.config(port=server.port, timeout=1)

    def name(self, service):
        return service.remote_id or f"{self.tenant.prefix}{service.id}"

    @contextlib.contextmanager
    def refusing(self, module_id):
        """The names the module is about to create are someone else's."""
        names = [self.name(service) for service in services_to_open(module_id)]
        for name in names:
            self.take(name)
        try:
            yield
        finally:
            for name in names:
                assert self.tenant.lookup(name)["comment"] == "someone-else"  # left alone
                self.release(name)

    def secrets(self):
        return [self.tenant.admin_password]

    def objects(self, service):
        name = self.name(service)
        state = self.tenant.state(name)
        if state is None:
            return [(name, "deleted")] if service.remote_id else []
        return [(name, state)]


class MariaDBBackend(DatabaseBackend):
    type_id = "mariadb"

    def take(self, name):
        self.tenant.sql(f"CREATE DATABASE `{name}` COMMENT 'someone-else'")

    def release(self, name):
        self.tenant.sql(f"DROP DATABASE `{name}`")


class PostgreSQLBackend(DatabaseBackend):
    type_id = "postgresql"

    def take(self, name):
        self.tenant.sql(f'CREATE ROLE "{name}"; COMMENT ON ROLE "{name}" IS \'someone-else\'')

    def release(self, name):
        self.tenant.sql(f'DROP ROLE "{name}"')


# --- provisor: reselling from an upstream Provisor (a real provisor serve) ---------------


class ProvisorBackend(Backend):
    """The provisor module and a real upstream ``provisor serve`` of the session (fixture
    ``provisor_upstream``). Each backend makes its own reseller client there (so what
    exists "for a service" is the upstream services of that client: each test of the suite
    opens one service) and its own sandbox module with two tariffs (the second for
    change_tariff)."""

    type_id = "provisor"
    refusal_text = "This tariff cannot be ordered"
    server = None  # the upstream Instance (set by _server_for_its_backend)

    def __init__(self):
        up = self.upstream = ProvisorBackend.server
        tag = uuid.uuid4().hex[:8]
        department = up.call("POST", "/departments", {"name": f"Upstream {tag}"})
        self.module = up.call(
            "POST",
            "/modules",
            {
                "name": f"sandbox-{tag}",
                "type": "sandbox",
                "config": {},
                "department_id": department["id"],
            },
        )
        self.tariffs = [
            up.call(
                "POST",
                "/tariffs",
                {
                    "name": f"VPS {size} {tag}",
                    "product_type": "vps",
                    "price": "5.00",
                    "internal_name": f"up-{size}-{tag}",
                    "module_ids": [self.module["id"]],
                },
            )
            for size in ("s", "xl")
        ]
        self.client = up.call(
            "POST", "/clients", {"name": f"Reseller {tag}", "email": f"r-{tag}@example.com"}
        )
        self.token = up.call("POST", f"/clients/{self.client['id']}/reseller")["token"]

    def config(self):
        return {"url": self.upstream.url, "token": self.token, "timeout": 3, "poll_interval": 0.2}

    def bad_credentials(self):
        return {**self.config(), "token": "pv_not-the-resellers-token"}

    def unreachable(self):
        from tests.support import free_port

        return {**self.config(), "url": f"http://127.0.0.1:{free_port()}", "timeout": 1}

    def silent(self, server):
        return {**self.config(), "url": f"http://127.0.0.1:{server.port}", "timeout": 1}

    def item_settings(self, bigger=False):
        return {"upstream_tariff_id": self.tariffs[1 if bigger else 0]["id"]}

    def _enable(self, enabled):
        self.upstream.call(
            "PUT",
            f"/modules/{self.module['id']}",
            {"name": self.module["name"], "config": {}, "enabled": enabled},
        )

    @contextlib.contextmanager
    def refusing(self, module_id):
        """The upstream stops selling the tariff (its module disabled there)."""
        self._enable(False)
        try:
            yield
        finally:
            self._enable(True)

    def secrets(self):
        return [self.token]

    def objects(self, service):
        found = self.upstream.call("GET", f"/services?client_id={self.client['id']}")
        return [(str(s["id"]), s["status"]) for s in found["services"]]


@pytest.fixture(scope="session")
def provisor_upstream(tmp_path_factory):
    """An upstream Provisor (``provisor serve``, its own SQLite) for the whole session."""
    from tests.support import Instance

    upstream = Instance(tmp_path_factory.mktemp("upstream"), "upstream").start()
    yield upstream
    upstream.stop()


BACKENDS["provisor"] = ProvisorBackend
BACKENDS["mariadb"] = MariaDBBackend
BACKENDS["postgresql"] = PostgreSQLBackend


# --- libvirt: virtual servers on libvirt's test driver in a libvirtd of the tests' own ------


class LibvirtBackend(Backend):
    """The libvirt module on the test driver of the session's libvirtd
    (``tests/support.py: LibvirtDaemon``; shared by the test and the worker through its socket).
    Each backend has its own name prefix and owner tag; its domains and volumes are
    removed at the end. What exists for a service is the domain whose UUID is derived
    from the service: "active" while running, "suspended" while paused or shut off."""

    type_id = "libvirt"
    product_type = "vps"
    refusal_text = "already exists with uuid"
    server = None  # the session's libvirtd (set by _server_for_its_backend)

    def __init__(self):
        import uuid

        self.daemon = LibvirtBackend.server
        tag = uuid.uuid4().hex[:8]
        self.tag = f"ct-{tag}"
        self.prefix = f"ct{tag}-"

    def config(self):
        from tests.support import LIBVIRT_BASE_IMAGE as BASE_IMAGE
        from tests.support import LIBVIRT_NETWORK as NETWORK
        from tests.support import LIBVIRT_POOL as POOL

        return {
            "uri": self.daemon.uri,
            "pool": POOL,
            "network": NETWORK,
            "base_image": BASE_IMAGE,
            "name_prefix": self.prefix,
            "owner_tag": self.tag,
            "poll_interval": 0.2,
            "timeout": 5,
        }

    def unreachable(self):
        import tempfile

        missing = f"{tempfile.gettempdir()}/provisor-no-libvirtd-{self.tag}/libvirt-sock"
        return {**self.config(), "uri": f"test+unix:///default?socket={missing}"}

    silent_unix = True

    def silent(self, server):
        return {**self.config(), "uri": f"test+unix:///default?socket={server.path}", "timeout": 2}

    @contextlib.contextmanager
    def refusing(self, module_id):
        """The names the module is about to define are taken by domains of someone
        else (another UUID)."""
        import uuid

        names = [f"{self.prefix}{service.id}" for service in services_to_open(module_id)]
        made = {}
        for name in names:
            other = str(uuid.uuid4())
            self.daemon.keeper.defineXML(
                f"<domain type='test'><name>{name}</name><uuid>{other}</uuid>"
                "<memory>65536</memory><os><type>hvm</type></os></domain>"
            )
            made[name] = other
        try:
            yield
        finally:
            for name, other in made.items():
                dom = self.daemon.keeper.lookupByName(name)
                assert dom.UUIDString() == other  # left alone
                dom.undefine()

    def objects(self, service):
        import libvirt

        from modules.libvirt import domain_uuid

        try:
            dom = self.daemon.keeper.lookupByUUIDString(domain_uuid(self.tag, service.id))
        except libvirt.libvirtError:
            return [(service.remote_id, "deleted")] if service.remote_id else []
        state = dom.state()[0]
        return [(dom.name(), "active" if state == libvirt.VIR_DOMAIN_RUNNING else "suspended")]

    def close(self):
        self.daemon.cleanup(self.prefix)


BACKENDS["libvirt"] = LibvirtBackend
# --- shellscripts: the example scripts over SSH, on a real sshd ---------------------------


class ShellScriptsBackend(Backend):
    """The shellscripts module running the README's example scripts (docs/examples/
    shellscripts: a Linux user per service) as root through a real sshd of the tests'
    (``ssh_host``: its own key, user prefix and owner tag; its users removed after). What
    exists for a service is its Linux user: "suspended" while its password is locked."""

    type_id = "shellscripts"
    product_type = "hosting"
    refusal_text = "it is not this service's, left alone"
    server = None  # the test's SSHHost (set by _server_for_its_backend)

    def __init__(self):
        import uuid

        from tests.support import ssh_keypair

        self.host = type(self).server
        # every secret setting in use: a key encrypted with a passphrase, and a password
        # (root has none on this machine: never tried, since the key gets in first)
        self.passphrase = f"pass-{uuid.uuid4().hex}"
        self.private_key, public = ssh_keypair(self.passphrase)
        self.host.server.authorize("root", public)
        self.host.extra_keys.append(public)
        self.password = f"pw-{uuid.uuid4().hex}"

    def config(self):
        return self.host.config(
            private_key=self.private_key, key_passphrase=self.passphrase, password=self.password
        )

    def bad_credentials(self):
        from tests.support import ssh_keypair

        return {**self.config(), "private_key": ssh_keypair()[0], "key_passphrase": ""}

    def unreachable(self):
        from tests.support import free_port

        return {**self.config(), "port": free_port(), "connect_timeout": 1}

    def silent(self, server):
        return {**self.config(), "port": server.port, "connect_timeout": 1}

    @contextlib.contextmanager
    def refusing(self, module_id):
        """The users the module is about to create exist already, made by someone else."""
        import subprocess

        from tests.support import linux_user, remove_linux_user

        names = [self.host.user_of(service.id) for service in services_to_open(module_id)]
        for name in names:
            subprocess.run(
                ["useradd", "--no-create-home", "--comment", "someone-else", name], check=True
            )
        try:
            yield
        finally:
            for name in names:
                assert linux_user(name)["comment"] == "someone-else"  # left alone
                remove_linux_user(name)

    def secrets(self):
        key_lines = [line for line in self.private_key.splitlines() if len(line) >= 16][1:-1]
        return [self.private_key, *key_lines, self.passphrase, self.password]

    def objects(self, service):
        from tests.support import linux_user

        name = service.remote_id or self.host.user_of(service.id)
        found = linux_user(name)
        if found is None:
            return [(name, "deleted")] if service.remote_id else []
        return [(name, "suspended" if found["locked"] else "active")]


BACKENDS["shellscripts"] = ShellScriptsBackend
# --- proxmox: the strict simulator of the Proxmox VE API (simulated, not a real Proxmox) ---


class ProxmoxBackend(Backend):
    """The proxmox module against ``tests/simulators/proxmox_sim.py``, a simulator of the
    published Proxmox VE API over HTTPS on loopback (its certificate made for the test,
    checked through ``ca_certificate``), with templates 9000 and 9001. What exists for a
    service is the VM whose description carries its mark: "active" while running,
    "suspended" while paused or stopped. It refuses by denying the token ``VM.Clone``."""

    type_id = "proxmox"
    product_type = "vps"
    refusal_text = "Permission check failed (/vms/9000, VM.Clone)"

    def __init__(self):
        import tempfile

        from tests.simulators.proxmox_sim import simulated_proxmox

        self.folder = tempfile.mkdtemp(prefix="provisor-proxmox-")
        self.sim = simulated_proxmox(self.folder)
        self.tag = f"ct-{uuid.uuid4().hex[:8]}"

    def config(self):
        return {
            "api_url": self.sim.url,
            "token_id": self.sim.token_id,
            "token_secret": self.sim.secret,
            "node": "pve",
            "ca_certificate": self.sim.ca_pem,
            "owner_tag": self.tag,
            "poll_interval": 0.2,
            "ip_wait": 5,
            "timeout": 3,
        }

    def bad_credentials(self):
        return {**self.config(), "token_secret": str(uuid.uuid4())}

    def unreachable(self):
        from tests.support import free_port

        return {**self.config(), "api_url": f"https://127.0.0.1:{free_port()}", "timeout": 1}

    def silent(self, server):
        return {**self.config(), "api_url": f"https://127.0.0.1:{server.port}", "timeout": 1}

    @contextlib.contextmanager
    def refusing(self, module_id):
        self.sim.denied.add("VM.Clone")
        try:
            yield
        finally:
            self.sim.denied.discard("VM.Clone")

    def secrets(self):
        return [self.sim.secret]

    def item_settings(self, bigger=False):
        return {
            "templates": "debian-12 = 9000\nubuntu-24.04 = ubuntu-2404-cloud",
            "cores": 2 if bigger else 1,
            "memory_mib": 2048 if bigger else 1024,
            "disk_gib": 8 if bigger else 4,
        }

    def objects(self, service):
        found = self.sim.find(f"{self.tag}:service-{service.id}")
        if not found:
            return [(service.remote_id, "deleted")] if service.remote_id else []
        return [
            (str(vmid), "active" if vm["status"] == "running" and not vm["paused"] else "suspended")
            for vmid, vm in found
        ]

    def close(self):
        import shutil

        self.sim.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


BACKENDS["proxmox-simulated"] = ProxmoxBackend


# --- cpanel: cPanel & WHM, against a strict simulator of WHM API 1 -----------------------


class CpanelBackend(Backend):
    """The cpanel module and a **simulated** WHM (tests/simulators/cpanel_sim.py: WHM API
    1 over HTTPS on loopback, written from cPanel's published documentation; no cPanel
    runs here). What exists for a service is the account of its derived username with its
    domain: "suspended" while WHM has it suspended."""

    type_id = "cpanel"
    product_type = "hosting"
    creates_remote_items = True  # the tariff's WHM package
    refusal_text = "is already in use by another account"

    def __init__(self):
        from tests.simulators.cpanel_sim import WhmSimulator

        self.sim = WhmSimulator().start()

    def config(self):
        return self.sim.config()

    def bad_credentials(self):
        return {**self.sim.config(), "api_token": "NOTTHETOKEN" + "0" * 21}

    def unreachable(self):
        from tests.support import free_port

        return {**self.sim.config(), "url": f"https://127.0.0.1:{free_port()}", "timeout": 1}

    def silent(self, server):
        return {**self.sim.config(), "url": f"https://127.0.0.1:{server.port}", "timeout": 1}

    def item_settings(self, bigger=False):
        return {"quota": 4096 if bigger else 1024, "bwlimit": 10240, "maxaddon": 2, "maxpop": 10}

    @contextlib.contextmanager
    def refusing(self, module_id):
        """The domains the module is about to host belong to other accounts already."""
        made = []
        for n, service in enumerate(services_to_open(module_id)):
            made.append(f"other{n}")
            self.sim.add_account(made[-1], service.params["domain"], owner="someone")
        try:
            yield
        finally:
            for user in made:
                assert self.sim.accounts[user]["owner"] == "someone"  # left alone
                del self.sim.accounts[user]

    def secrets(self):
        return [self.sim.token]

    def objects(self, service):
        from modules.cpanel import account_username

        domain = service.params["domain"]
        user = service.remote_id or account_username(domain, service.id)
        account = self.sim.accounts.get(user)
        if account is None or account["domain"] != domain:
            return [(user, "deleted")] if service.remote_id else []
        return [(user, "suspended" if account["suspended"] else "active")]

    def has_item(self, internal_name):
        return internal_name in self.sim.packages

    def close(self):
        self.sim.stop()


BACKENDS["cpanel-simulated"] = CpanelBackend


@pytest.fixture
def whm():
    """A simulated WHM of the test's own (tests/simulators/cpanel_sim.py), stopped after."""
    from tests.simulators.cpanel_sim import WhmSimulator

    sim = WhmSimulator().start()
    yield sim
    sim.stop()


# --- ispmanager: the ispmanager module against a SIMULATED ISPmanager 6 ---------------------
# (tests/simulators/ispmanager_sim.py: built from the published API documentation, not a
# real panel)


class ISPmanagerBackend(Backend):
    """The ispmanager module and a simulator of the ISPmanager 6 API of its own (HTTPS on
    loopback, self-signed certificate). What exists for a service is the panel user whose
    comment names it: "suspended" while the panel has it disabled."""

    type_id = "ispmanager"
    product_type = "hosting"
    creates_remote_items = True  # the tariff's user template (preset)
    refusal_text = "The user limit of this licence is reached"

    def __init__(self):
        from tests.simulators.ispmanager_sim import ISPmanagerSim

        self.sim = ISPmanagerSim().start()

    def config(self):
        return self.sim.config()

    def bad_credentials(self):
        return {**self.sim.config(), "password": "not-the-admin-password"}

    def unreachable(self):
        from tests.support import free_port

        return {**self.sim.config(), "url": f"https://127.0.0.1:{free_port()}", "timeout": 1}

    def silent(self, server):
        return {**self.sim.config(), "url": f"https://127.0.0.1:{server.port}", "timeout": 1}

    @contextlib.contextmanager
    def refusing(self, module_id):
        self.sim.refuse_create = ("limit", "user", self.refusal_text)
        try:
            yield
        finally:
            self.sim.refuse_create = None

    def secrets(self):
        from urllib.parse import quote, quote_plus

        password = self.sim.password
        return [password, quote_plus(password), quote(password, safe="")]

    def item_settings(self, bigger=False):
        return {"disk_quota_mib": 4096 if bigger else 1024, "webdomains": 3 if bigger else 1}

    def objects(self, service):
        owner = f"provisor:service-{service.id}"
        with self.sim.lock:
            found = [
                (u["name"], "active" if u["active"] == "on" else "suspended")
                for u in self.sim.users.values()
                if u["comment"] == owner
            ]
        if not found and service.remote_id:
            found.append((service.remote_id, "deleted"))
        return found

    def has_item(self, internal_name):
        return internal_name in self.sim.presets

    def close(self):
        self.sim.stop()


# the key is the parametrized id: the suite's test ids say the panel is simulated
BACKENDS["ispmanager-simulated"] = ISPmanagerBackend


@pytest.fixture
def ispmanager_sim():
    """A simulated ISPmanager 6 panel of the test's own (HTTPS on a free loopback port,
    its own self-signed certificate), stopped afterwards."""
    from tests.simulators.ispmanager_sim import ISPmanagerSim

    sim = ISPmanagerSim().start()
    yield sim
    sim.stop()


# --- epp: domain registration against a simulated EPP registry ----------------------------


class EppBackend(Backend):
    """The epp module against a simulated registry (``tests/simulators/epp_sim.py``: a
    strict EPP server over TLS built from RFC 5730-5734, not a real registry), one per
    backend. What exists for a service is the domain it ordered, sponsored by the
    module's registrar login: "suspended" while it has clientHold, "deleted" once the
    registry no longer has it."""

    type_id = "epp"
    product_type = "domain"
    refusal_text = "sponsored by another registrar"

    def __init__(self):
        import tempfile

        from tests.simulators.epp_sim import EppSimulator, self_signed

        folder = tempfile.mkdtemp(prefix="provisor-epp-")
        self.sim = EppSimulator(folder).start()
        self.client_id, self.password = next(iter(self.sim.registrars.items()))
        # the registrar's client certificate (the setting is secret: the key is in it)
        _, _, cert, self.key = self_signed(folder, "registrar")
        self.sim.trust_client_cert(cert)
        self.client_cert = cert + self.key

    def config(self):
        return {
            "host": "127.0.0.1",
            "port": self.sim.port,
            "client_id": self.client_id,
            "password": self.password,
            "ca_bundle": self.sim.cert_pem,
            "client_cert": self.client_cert,
            "nameservers": "ns1.dns-host.invalid, ns2.dns-host.invalid",
            "fallback_city": "Aarhus",
            "fallback_country": "DK",
            "poll_interval": 0.2,
            "timeout": 3,
        }

    def bad_credentials(self):
        return {**self.config(), "password": "not-the-epp-pw"}

    def unreachable(self):
        from tests.support import free_port

        return {**self.config(), "port": free_port(), "timeout": 1}

    def silent(self, server):
        return {**self.config(), "port": server.port, "timeout": 1}

    @contextlib.contextmanager
    def refusing(self, module_id):
        """The names about to be registered are another registrar's already."""
        names = [service.params["domain"] for service in services_to_open(module_id)]
        for name in names:
            self.sim.register_for("other-registrar", name)
        try:
            yield
        finally:
            for name in names:
                assert self.sim.domains[name]["clID"] == "other-registrar"  # left alone
                del self.sim.domains[name]

    def secrets(self):
        key_lines = [line for line in self.key.splitlines() if len(line) >= 16][1:-1]
        return [self.password, self.key, *key_lines]

    def objects(self, service):
        name = service.remote_id or service.params["domain"]
        found = self.sim.domains.get(name)
        if found is None or found["clID"] != self.client_id:
            return [(name, "deleted")] if service.remote_id else []
        return [(name, "suspended" if "clientHold" in found["status"] else "active")]

    def close(self):
        self.sim.stop()


BACKENDS["epp-simulated"] = EppBackend


# backends whose server is a fixture: (fixture, the class that gets it as ``server``)

# backends whose server is a fixture: (fixture, the class that gets it as ``server``)
SERVER_FIXTURES = {
    "powerdns": ("powerdns", PowerDNSBackend),
    "mariadb": ("mariadb", MariaDBBackend),
    "postgresql": ("postgresql", PostgreSQLBackend),
    "libvirt": ("libvirtd", LibvirtBackend),
    "shellscripts": ("ssh_host", ShellScriptsBackend),
    "provisor": ("provisor_upstream", ProvisorBackend),
}


@pytest.fixture(autouse=True)
def _server_for_its_backend(request):
    """A backend whose server is a fixture gets it (skipped, saying why, without it);
    autouse fixtures are set up before ``backend`` makes its instance."""
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params.get("backend") if callspec is not None else None
    if name in SERVER_FIXTURES:
        fixture, cls = SERVER_FIXTURES[name]
        cls.server = request.getfixturevalue(fixture)


@pytest.fixture(scope="session")
def libvirtd():
    """A libvirtd of the tests' own for the session (``tests/support.py: LibvirtDaemon``): the
    test driver's state in it is shared by the tests and the workers."""
    from tests.conftest import need
    from tests.support import LibvirtDaemon
    from tests.support import libvirt_python_binding as python_binding
    from tests.support import libvirtd_binary as binary

    need(binary() is not None, "libvirtd is not installed (apt-get install libvirt-daemon)")
    need(
        python_binding(),
        "libvirt-python is not installed (apt-get install libvirt-dev pkg-config, then "
        "pip install -e '.[libvirt]')",
    )
    daemon = LibvirtDaemon().start()
    yield daemon
    daemon.stop()


@pytest.fixture
def pdns(app, api, engine, powerdns):
    """A powerdns module of the test's own (owner tag, client, tariffs) on the session's
    PowerDNS (``tests.support.Dns``); its zones are deleted afterwards, also on failure."""
    from tests.support import Dns

    setup = Dns(app, api, engine, powerdns)
    yield setup
    setup.cleanup()


# --- acme: TLS certificates from pebble (Let's Encrypt's test CA) ----------------------
# The CA's http-01 validation connects to 127.0.0.1:<pebble's httpPort>: a server there
# serves the running test's own app (tests.support.current_test_app), whose
# /.well-known/acme-challenge/<token> answers from the test's database.


class AcmeBackend(Backend):
    """The acme module against a real pebble that requires External Account Binding.

    What exists "for a service" at the CA: the orders pebble holds (for any of Provisor's
    accounts) for the service's names, minus those a renewal made (a renewal's order
    replaces the one before it by design; Provisor records which operation made each
    certificate): exactly one per service, whose certificate is "deleted" once pebble
    reports it revoked."""

    type_id = "acme"
    product_type = "certificate"
    creates_remote_items = True  # the CA account
    refusal_text = "the field 'kid' references a key that is not known to the ACME server"

    def __init__(self):
        import tempfile

        from tests.conftest import need
        from tests.support import Pebble, current_test_app, serve_wsgi

        need(Pebble.available(), "pebble is not installed (apt-get install pebble)")
        self.folder = tempfile.mkdtemp(prefix="provisor-pebble-")
        self.server, port = serve_wsgi(current_test_app)
        self.pebble = Pebble(self.folder, port, eab=True).start()

    def config(self):
        return self.pebble.config()

    def bad_credentials(self):
        import base64
        import secrets

        other = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        return {**self.pebble.config(), "eab_hmac_key": other}

    def unreachable(self):
        from tests.support import free_port

        return {
            **self.pebble.config(),
            "directory_url": f"https://127.0.0.1:{free_port()}/dir",
            "timeout": 1,
        }

    def silent(self, server):
        return {
            **self.pebble.config(),
            "directory_url": f"https://127.0.0.1:{server.port}/dir",
            "timeout": 1,
        }

    @contextlib.contextmanager
    def refusing(self, module_id):
        from app.models import ProcessingModule

        module = ProcessingModule.get_by_id(module_id)
        saved = dict(module.config)
        module.config = {**saved, "eab_kid": "a-kid-this-ca-never-issued"}
        module.save()
        try:
            yield
        finally:
            module.config = saved
            module.save()

    def secrets(self):
        return [self.pebble.eab_hmac_key]

    def _accounts(self):
        from actors.middleware import AppContextMiddleware
        from app.models import AcmeAccount
        from app.services import certificates
        from tests.support import AcmeAccountClient

        with AppContextMiddleware.app.app_context(), database.connection_context():
            rows = [row for row in AcmeAccount.select() if row.url]
            keys = [certificates.account_key(row.id)[1] for row in rows]
        return [AcmeAccountClient(self.pebble, k, r.url) for r, k in zip(rows, keys, strict=True)]

    def objects(self, service):
        from cryptography import x509

        from actors.middleware import AppContextMiddleware
        from app.models import AcmeCertificate

        with AppContextMiddleware.app.app_context(), database.connection_context():
            rows = list(
                AcmeCertificate.select(AcmeCertificate, Operation)
                .join(Operation)
                .where(AcmeCertificate.service == service.id)
            )
        renewals = {row.order_url for row in rows if row.operation.kind == "renew"}
        serials = {row.order_url: row.serial for row in rows}
        names = set(service.params.get("domains") or [])
        found = []
        for account in self._accounts():
            for url in account.orders():
                order = account.order(url)
                if url in renewals or {i["value"] for i in order["identifiers"]} != names:
                    continue
                serial = serials.get(url)
                if serial is None and order.get("certificate"):
                    # issued, not stored by Provisor (yet): pebble serves it until revoked
                    leaf = x509.load_pem_x509_certificate(
                        account.get(order["certificate"]).text.encode()
                    )
                    serial = format(leaf.serial_number, "x")
                revoked = serial and self.pebble.certificate_status(serial) == "Revoked"
                found.append((url, "deleted" if revoked else "active"))
        return found

    def has_item(self, internal_name):
        """The CA knows Provisor's account (the item of every tariff of the module)."""
        return any(
            account.get(account.account_url).json()["status"] == "valid"
            for account in self._accounts()
        )

    def close(self):
        import shutil

        self.pebble.stop()
        self.server.shutdown()
        shutil.rmtree(self.folder, ignore_errors=True)


BACKENDS["acme"] = AcmeBackend


@pytest.fixture(scope="session")
def acme_http_port():
    """The port pebble's http-01 checks connect to: one server for the session there
    serves each test's own app (its /.well-known/acme-challenge/ answers)."""
    from tests.support import current_test_app, serve_wsgi

    server, port = serve_wsgi(current_test_app)
    yield port
    server.shutdown()


@pytest.fixture(scope="session")
def pebble(tmp_path_factory, acme_http_port):
    """pebble without External Account Binding, issuing 40-day certificates; each test
    registers its own account (its own database) and orders its own names."""
    from tests.conftest import need
    from tests.support import Pebble

    need(Pebble.available(), "pebble is not installed (apt-get install pebble)")
    server = Pebble(tmp_path_factory.mktemp("pebble"), acme_http_port, validity=40 * 86400)
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def pebble_eab(tmp_path_factory, acme_http_port):
    """pebble requiring External Account Binding (``eab_kid``, ``eab_hmac_key``)."""
    from tests.conftest import need
    from tests.support import Pebble

    need(Pebble.available(), "pebble is not installed (apt-get install pebble)")
    server = Pebble(tmp_path_factory.mktemp("pebble-eab"), acme_http_port, eab=True)
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def pebble_dns01(tmp_path_factory, acme_http_port, powerdns):
    """pebble whose DNS server is the session's PowerDNS: its dns-01 check reads the TXT
    records Provisor publishes there (40-day certificates, no EAB)."""
    from tests.conftest import need
    from tests.support import Pebble

    need(Pebble.available(), "pebble is not installed (apt-get install pebble)")
    server = Pebble(
        tmp_path_factory.mktemp("pebble-dns01"),
        acme_http_port,
        validity=40 * 86400,
        dns_server=f"127.0.0.1:{powerdns.dns_port}",
    )
    yield server.start()
    server.stop()


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, monkeypatch):
    """One module type with its server, running (the suite runs once per backend)."""
    modules.types()
    monkeypatch.setitem(modules._registry, JobPanelModule.id, JobPanelModule)
    instance = BACKENDS[request.param]()
    yield instance
    instance.close()


class Engine:
    """Runs operations in the test's own thread: nothing is sent to a worker."""

    def __init__(self, app):
        self.app = app

    def run(self, op_id, max_checks=50):
        """Run the operation until it leaves the statuses a worker would pick up."""
        for _ in range(max_checks):
            with self.app.app_context(), database.connection_context():
                op = Operation.get_by_id(op_id)
                if op.status not in ("queued", "retry_wait", "polling"):
                    return op
                if op.status == "polling":
                    time.sleep(0.1)  # a remote job (a real server elsewhere) takes a moment
                Operation.update(next_run_at=None).where(Operation.id == op_id).execute()
            self.run_once(op_id)
        raise AssertionError(f"operation {op_id} did not settle after {max_checks} runs")

    def run_once(self, op_id):
        """One attempt as a worker runs it: the connection opened for it and released after
        (``actors.middleware``). On PostgreSQL the attempt gives its pooled connection back
        around the module's call, which a ``connection_context`` cannot span."""
        with self.app.app_context():
            database.connect(reuse_if_open=True)
            try:
                return operations.run(op_id)
            finally:
                release()

    def run_all(self):
        """Run every operation that is due (e.g. the ensure_item of a new tariff)."""
        with self.app.app_context(), database.connection_context():
            ids = [
                op.id
                for op in Operation.select().where(
                    Operation.status.in_(("queued", "retry_wait", "polling"))
                )
            ]
        return [self.run(op_id) for op_id in ids]

    def get(self, model, pk):
        with self.app.app_context(), database.connection_context():
            return model.get_by_id(pk)

    def service(self, service_id):
        return self.get(Service, service_id)

    def items(self):
        with self.app.app_context(), database.connection_context():
            return list(Item.select())


@pytest.fixture
def engine(app, monkeypatch):
    """No messages to the worker: the test runs each operation itself."""
    monkeypatch.setattr(dispatch, "_send", lambda *args, **kwargs: None)
    return Engine(app)


@pytest.fixture
def any_engine(any_app, monkeypatch):
    """``engine`` for ``any_app``: SQLite, then PostgreSQL."""
    monkeypatch.setattr(dispatch, "_send", lambda *args, **kwargs: None)
    return Engine(any_app)


@pytest.fixture
def epp_registry():
    """A simulated EPP registry of the test's own (``EppBackend``: the simulator, the
    registrar's login and client certificate, settings that work)."""
    registry = EppBackend()
    yield registry
    registry.close()


@pytest.fixture
def proxmox_sim(tmp_path):
    """A simulated Proxmox VE (``tests/simulators/proxmox_sim.py``) of the test's own over
    HTTPS on loopback, with templates 9000 and 9001; stopped afterwards."""
    from tests.simulators.proxmox_sim import simulated_proxmox

    sim = simulated_proxmox(str(tmp_path))
    yield sim
    sim.stop()
