"""The proxmox module type against a SIMULATOR of the published Proxmox VE API
(``tests/simulators/proxmox_sim.py``), not a real Proxmox: HTTPS on loopback with a
certificate made for the test, API tokens, tasks that take time (``Result.poll``), the
documented error forms, and the faults (down, slow, errors, garbage). Every test name
says "simulated"."""

import uuid

import pytest
import requests

from app.db import database
from app.models import Attempt, Email, Operation
from app.services import operations


class Vps:
    """A proxmox module of the test's own on the simulator, its tariffs and orders."""

    def __init__(self, api, engine, sim, app, **config):
        self.api, self.engine, self.sim, self.app = api, engine, sim, app
        self.tag = f"t-{uuid.uuid4().hex[:8]}"
        department = api.ok("post", "/departments", {"name": f"VPS {self.tag}"})
        self.module = api.ok(
            "post",
            "/modules",
            {
                "name": f"proxmox-{self.tag}",
                "type": "proxmox",
                "config": self.config(**config),
                "department_id": department["id"],
                "retry_delay": 1,
                "test_connection": True,
            },
            status=201,
        )
        self.client = api.ok(
            "post", "/clients", {"name": "Vera", "email": f"vera-{self.tag}@example.com"}
        )

    def config(self, **extra):
        return {
            "api_url": self.sim.url,
            "token_id": self.sim.token_id,
            "token_secret": self.sim.secret,
            "node": "pve",
            "ca_certificate": self.sim.ca_pem,
            "owner_tag": self.tag,
            "poll_interval": 0.2,
            "ip_wait": 5,
            "timeout": 2,
            **extra,
        }

    def tariff(self, expect="done", **plan):
        plan.setdefault("templates", "debian-12 = 9000\nubuntu-24.04 = ubuntu-2404-cloud")
        name = f"vps-{uuid.uuid4().hex[:8]}"
        tariff = self.api.ok(
            "post",
            "/tariffs",
            {
                "name": f"VPS {name}",
                "product_type": "vps",
                "price": "5",
                "internal_name": name,
                "module_ids": [self.module["id"]],
                "item_settings": {str(self.module["id"]): plan},
            },
            status=201,
        )
        for op in self.engine.run_all():  # ensure_item
            assert op.status == expect, op.last_error
        return tariff

    def order(self, tariff, **params):
        params.setdefault("hostname", "web1.example.com")
        order = self.api.order(self.client["id"], tariff["id"], params)
        code, paid = self.api.pay(order)
        assert code == 200, paid
        return order["service_id"], paid["operation_id"]

    def open(self, tariff, **params):
        service_id, op_id = self.order(tariff, **params)
        return service_id, self.engine.run(op_id)

    def request(self, service_id, kind, **params):
        op = self.api.ok("post", f"/services/{service_id}/{kind}", params, status=202)
        return self.engine.run(op["id"])

    def service(self, service_id):
        return self.api.ok("get", f"/services/{service_id}")

    def vms(self, service_id):
        return self.sim.find(f"{self.tag}:service-{service_id}")

    def attempts(self, op_id):
        with self.app.app_context(), database.connection_context():
            return list(Attempt.select().where(Attempt.operation == op_id).order_by(Attempt.number))

    def log(self, op_id):
        return "\n".join(a.log or "" for a in self.attempts(op_id))

    def run_once(self, op_id):
        """One attempt (or check) of the operation, as a worker would run it."""
        with self.app.app_context(), database.connection_context():
            Operation.update(next_run_at=None).where(Operation.id == op_id).execute()
            operations.run(op_id)
            return Operation.get_by_id(op_id)


@pytest.fixture
def vps(app, api, engine, proxmox_sim):
    return Vps(api, engine, proxmox_sim, app)


def test_simulated_proxmox_open_clones_sizes_starts_and_gives_the_client_access(vps):
    vps.sim.running_reads = 1  # each task is seen running once, however slow the machine
    tariff = vps.tariff(cores=2, memory_mib=2048, disk_gib=10)
    service_id, op = vps.open(tariff, os_image="ubuntu-24.04")
    assert op.status == "done", op.last_error
    ((vmid, vm),) = vps.vms(service_id)
    service = vps.service(service_id)
    details = service["details"]
    assert service["status"] == "active" and service["remote_id"] == str(vmid)
    assert vmid == 100  # the first id /cluster/nextid gave
    config = vm["config"]
    assert config["name"] == "web1.example.com"  # the ordered hostname (cloud-init's)
    assert config["cores"] == 2 and config["memory"] == 2048
    assert config["tags"] == f"{vps.tag}-service-{service_id}"
    assert config["ciuser"] == "root" and config["cipassword"] == "**********"
    assert config["ipconfig0"] == "ip=dhcp" and config["agent"] == "1"
    assert "vm-100-disk-0" in config["scsi0"]  # a clone of 9001's disk
    assert vps.sim.disk_gib(vmid) == 10
    assert vm["status"] == "running" and not vm["paused"]
    assert details["hostname"] == "web1.example.com" and details["username"] == "root"
    assert details["ip"] == vm["ip"] and len(details["password"]) == 20
    assert service["module_data"]["image"] == "ubuntu-24.04"
    assert "console=kvm&novnc=1&vmid=100" in service["module_data"]["console"]
    # every step is a task whose UPID the module polled: the log shows them
    log = vps.log(op.id)
    for line in (
        "> GET /api2/json/cluster/nextid",
        "> POST /api2/json/nodes/pve/qemu/9001/clone",
        "> PUT /api2/json/nodes/pve/qemu/100/config",
        "> PUT /api2/json/nodes/pve/qemu/100/resize",
        "> POST /api2/json/nodes/pve/qemu/100/status/start",
        "> GET /api2/json/nodes/pve/qemu/100/agent/network-get-interfaces",
        "is running",
        "clone of 9001 (ubuntu-2404-cloud) to VM 100: OK",
    ):
        assert line in log, line
    assert details["password"] not in log and vps.sim.secret not in log
    assert len(vps.attempts(op.id)) > 4  # the checks of the polling operation
    qmclone = [u for u, t in vps.sim.tasks.items() if t["type"] == "qmclone"]
    assert vps.sim.task_log(qmclone[0])[-1] == "TASK OK"
    with vps.app.app_context(), database.connection_context():
        (email,) = Email.select().where(Email.service == service_id)
        stored = Operation.get_by_id(op.id).state
    assert details["ip"] in email.body and details["password"] in email.body
    assert stored.get("password") and details["password"] not in str(stored)


def test_simulated_proxmox_an_id_taken_meanwhile_gets_another_one(vps):
    """/cluster/nextid hands the same id to someone else, who clones first."""
    tariff = vps.tariff()
    vps.sim.steal_ids = 2
    service_id, op = vps.open(tariff)
    assert op.status == "done", op.last_error
    ((vmid, _),) = vps.vms(service_id)
    assert vmid == 102  # 100 and 101 went to someone else
    assert vps.sim.vm(100)["config"]["name"] == "someone-else-100"
    assert "VM id 100 was taken meanwhile" in vps.log(op.id)
    assert "VM 100 already exists on node 'pve'" in vps.log(op.id)


def test_simulated_proxmox_concurrent_opens_make_one_vm_each(vps):
    """Two services open step by step, interleaved: each gets its own VM, once."""
    tariff = vps.tariff()
    first, first_op = vps.order(tariff)
    second, second_op = vps.order(tariff)
    for _ in range(40):
        states = [vps.run_once(first_op).status, vps.run_once(second_op).status]
        if states == ["done", "done"]:
            break
    assert states == ["done", "done"]
    (a,), (b,) = vps.vms(first), vps.vms(second)
    assert a[0] != b[0]
    assert vps.service(first)["remote_id"] == str(a[0])


def test_simulated_proxmox_a_worker_dying_after_the_clone_call_leaves_one_vm(vps, monkeypatch):
    """The attempt dies right after Proxmox accepted the clone, before the UPID was
    stored: the next attempt finds the (locked) VM by its name and mark and adopts it."""
    from modules.proxmox import ProxmoxModule

    class Killed(BaseException):
        pass

    tariff = vps.tariff()
    service_id, op_id = vps.order(tariff)

    def die(*args, **kwargs):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(ProxmoxModule, "_wait_for", die)
        with pytest.raises(Killed):
            vps.run_once(op_id)
    with vps.app.app_context(), database.connection_context():
        assert "upid" not in (Operation.get_by_id(op_id).state or {})
        Operation.update(status="queued").where(Operation.id == op_id).execute()
    assert len(vps.vms(service_id)) == 1
    op = vps.engine.run(op_id)
    assert op.status == "done", op.last_error
    assert len(vps.vms(service_id)) == 1
    assert "is this service's: taking it over" in vps.log(op_id)


def test_simulated_proxmox_someone_elses_vm_of_the_name_is_left_alone(vps):
    tariff = vps.tariff()
    service_id, op_id = vps.order(tariff)
    vps.sim.add_vm(555, f"vps-{service_id}", description="made by hand")
    op = vps.engine.run(op_id)
    assert op.status == "manual"
    assert f"a VM named vps-{service_id} (id 555 on pve) exists that is not this service's" in (
        op.last_error
    )
    assert vps.sim.vm(555)["config"]["description"] == "made by hand"


def test_simulated_proxmox_suspend_resume_change_tariff_and_close(vps):
    tariff = vps.tariff(disk_gib=4)
    service_id, op = vps.open(tariff)
    assert op.status == "done", op.last_error
    ((vmid, _),) = vps.vms(service_id)
    assert vps.request(service_id, "suspend").status == "done"
    assert vps.sim.vm(vmid)["paused"] and vps.sim.vm(vmid)["status"] == "running"
    assert vps.request(service_id, "resume").status == "done"
    assert not vps.sim.vm(vmid)["paused"]
    bigger = vps.tariff(cores=4, memory_mib=4096, disk_gib=12)
    done = vps.request(service_id, "change_tariff", tariff_id=bigger["id"])
    assert done.status == "done", done.last_error
    assert vps.sim.disk_gib(vmid) == 12
    vm = vps.sim.vm(vmid)
    assert vm["pending"] == {"cores": 4, "memory": 4096}  # hot: at the next boot
    data = vps.service(service_id)["module_data"]
    assert data["pending_changes"].startswith("4 cores and 4096 MiB apply at the next boot")
    # a smaller tariff: cores and memory follow, the disk is not shrunk (Proxmox cannot)
    smaller = vps.tariff(cores=1, memory_mib=1024, disk_gib=4)
    done = vps.request(service_id, "change_tariff", tariff_id=smaller["id"])
    assert done.status == "done", done.last_error
    assert vps.sim.disk_gib(vmid) == 12
    assert "Proxmox cannot shrink it" in vps.log(done.id)
    closed = vps.request(service_id, "close")
    assert closed.status == "done", closed.last_error
    assert vps.sim.vm(vmid) is None and vps.vms(service_id) == []
    log = vps.log(closed.id)
    assert f"> POST /api2/json/nodes/pve/qemu/{vmid}/status/stop" in log
    assert f"> DELETE /api2/json/nodes/pve/qemu/{vmid}?purge=1&destroy-unreferenced-disks=1" in log
    assert vps.sim.vm(9001) is not None and vps.sim.vm(9000) is not None  # templates stay


def test_simulated_proxmox_suspension_by_shutdown(app, api, engine, proxmox_sim):
    vps = Vps(api, engine, proxmox_sim, app, suspend_mode="shutdown")
    service_id, op = vps.open(vps.tariff())
    assert op.status == "done", op.last_error
    ((vmid, _),) = vps.vms(service_id)
    assert vps.request(service_id, "suspend").status == "done"
    assert vps.sim.vm(vmid)["status"] == "stopped"
    assert "forceStop=1" not in vps.log(op.id)  # a form body, not in the logged path
    assert vps.request(service_id, "resume").status == "done"
    assert vps.sim.vm(vmid)["status"] == "running"


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("slow", "did not answer within 2 s"),
        ("garbage", "something that is not its API's JSON (text/html"),
        ("error", "Proxmox answered 500 to GET /cluster/resources: cfs-lock"),
    ],
)
def test_simulated_proxmox_faults_are_temporary(vps, fault, words):
    tariff = vps.tariff()
    service_id, op_id = vps.order(tariff)
    vps.sim.fault = fault
    vps.sim.slow_seconds = 3
    op = vps.run_once(op_id)
    (attempt,) = vps.attempts(op_id)
    assert attempt.outcome == "temporary_error", attempt.error
    assert words in attempt.error
    assert op.status == "retry_wait"
    vps.sim.fault = None  # it recovers: the retry opens the service, once
    op = vps.engine.run(op_id)
    assert op.status == "done", op.last_error
    assert len(vps.vms(service_id)) == 1


def test_simulated_proxmox_a_down_server_is_temporary(vps):
    tariff = vps.tariff()
    _, op_id = vps.order(tariff)
    vps.sim.stop()
    op = vps.run_once(op_id)
    (attempt,) = vps.attempts(op_id)
    assert attempt.outcome == "temporary_error" and "cannot reach Proxmox" in attempt.error
    assert op.status == "retry_wait"


def test_simulated_proxmox_refusals_are_permanent_in_proxmoxs_words(vps):
    tariff = vps.tariff()
    # a task that fails: its exit status
    _, op_id = vps.order(tariff)
    vps.sim.fail_tasks["qmclone"] = "clone failed: no space left on device"
    op = vps.engine.run(op_id)
    assert op.status == "manual"
    assert "clone of 9000 (debian-12-cloud) to VM 100" in op.last_error
    assert "clone failed: no space left on device" in op.last_error
    assert vps.sim.vm(100) is None  # Proxmox removed the half-made clone
    # a parameter Proxmox refuses: the parameter and its message
    other = Vps(vps.api, vps.engine, vps.sim, vps.app, ipconfig="ip=dhcp,bogus")
    _, op_id = other.order(other.tariff())
    op = other.engine.run(op_id)
    assert op.status == "manual"
    assert (
        "Parameter verification failed. (ipconfig0: value does not match the format"
        in op.last_error
    )


def test_simulated_proxmox_ensure_item_says_precisely_what_is_missing(vps):
    vps.sim.add_vm(9100, "plain-vm")
    vps.sim.add_vm(9200, "no-cloudinit", template=True, cloudinit=False)
    vps.sim.add_vm(9300, "big-disk", template=True, disk_gib=50)
    tariff = vps.tariff(
        expect="manual",
        templates="a = 9100\nb = 9999\nc = no-cloudinit\nd = big-disk",
        disk_gib=20,
    )
    (item,) = vps.api.ok("get", f"/tariffs/{tariff['id']}")["items"]
    error = item["error"]
    assert "VM 9100 (plain-vm) is not a template: convert it with qm template 9100" in error
    assert "there is no VM 9999 on the cluster to clone (templates there: 9000" in error
    assert "the template 9200 has no cloud-init drive (qm set 9200 --ide2" in error
    assert "the template 9300's disk scsi0 (50 GiB) is larger than the tariff's disk" in error
    # a bad list of templates is refused on the form, nothing saved
    code, body = vps.api.post(
        "/tariffs",
        {
            "name": "Bad",
            "product_type": "vps",
            "price": "5",
            "internal_name": f"bad-{vps.tag}",
            "module_ids": [vps.module["id"]],
            "item_settings": {str(vps.module["id"]): {"templates": "debian 12 = 9000"}},
        },
    )
    assert code == 422, body


def test_simulated_proxmox_the_client_chooses_among_the_tariffs_templates(vps):
    tariff = vps.tariff()
    fields = vps.api.ok("get", f"/tariffs/{tariff['id']}")["order_fields"]
    (image,) = [f for f in fields if f["name"] == "os_image"]
    assert image["options"] == ["debian-12", "ubuntu-24.04"]


def test_simulated_proxmox_check_config_names_the_setting(vps):
    def check(**config):
        code, body = vps.api.post(
            "/modules",
            {
                "name": f"check-{uuid.uuid4().hex[:8]}",
                "type": "proxmox",
                "config": vps.config(**config),
                "test_connection": True,
            },
        )
        return code, body

    code, body = check(ca_certificate="", fingerprint=vps.sim.fingerprint)
    assert code == 201, body  # the pinned fingerprint instead of a CA
    code, body = check(ca_certificate="", fingerprint="AB:" * 31 + "CD")
    assert (
        code == 422
        and "Fingerprints did not match" in body["error"]["fields"]["config.fingerprint"]
    ), body
    code, body = check(ca_certificate="")
    assert (
        code == 422
        and "certificate verify failed" in body["error"]["fields"]["config.ca_certificate"]
    ), body
    code, body = check(token_secret="not-the-secret")
    assert (
        code == 422
        and "401 authentication failure" in body["error"]["fields"]["config.token_secret"]
    ), body
    code, body = check(node="pve9")
    assert (
        code == 422
        and "the node pve9 is not in the cluster (nodes: pve)"
        in body["error"]["fields"]["config.node"]
    ), body
    code, body = check(token_id="provisor-without-realm", api_url="http://127.0.0.1:8006")
    assert code == 422, body
    assert set(body["error"]["fields"]) >= {"config.token_id", "config.api_url"}


def test_simulated_proxmox_the_simulator_is_strict(proxmox_sim):
    """What the real API refuses, the simulator refuses, in the documented forms."""
    from modules.base import pem_file

    proxmox_sim.task_seconds = 30  # the clone below is still running when looked at
    base = proxmox_sim.url + "/api2/json"
    auth = {"Authorization": f"PVEAPIToken={proxmox_sim.token_id}={proxmox_sim.secret}"}

    def call(method, path, headers=auth, **kw):
        reply = requests.request(
            method,
            base + path,
            headers=headers,
            verify=pem_file(proxmox_sim.ca_pem),
            timeout=5,
            **kw,
        )
        return reply.status_code, reply.reason, reply.json() if reply.content else None

    assert call("GET", "/version", headers={})[:2] == (401, "No ticket")
    wrong = {"Authorization": f"PVEAPIToken={proxmox_sim.token_id}=nope"}
    assert call("GET", "/version", headers=wrong)[:2] == (401, "authentication failure")
    status, reason, body = call("GET", "/version")
    assert status == 200 and body["data"]["version"].startswith("8.")
    assert call("GET", "/nodes/pve/bogus")[:2] == (
        501,
        "Method 'GET /nodes/pve/bogus' not implemented",
    )
    status, reason, body = call("POST", "/nodes/pve/qemu/9000/clone", data={"name": "x"})
    assert (status, reason) == (400, "Parameter verification failed.")
    assert body == {"data": None, "errors": {"newid": "property is missing and it is not optional"}}
    status, _, body = call("POST", "/nodes/pve/qemu/9000/clone", data={"newid": "abc", "x": "1"})
    assert body["errors"] == {
        "newid": "type check ('integer') failed - got 'abc'",
        "x": "property is not defined in schema and the schema does not allow additional "
        "properties",
    }
    status, reason, _ = call("POST", "/nodes/pve/qemu/9000/clone", data={"newid": "9001"})
    assert (status, reason) == (500, "VM 9001 already exists on node 'pve'")
    status, reason, _ = call("GET", "/nodes/pve/qemu/4242/config")
    assert (status, reason) == (
        500,
        "Configuration file 'nodes/pve/qemu-server/4242.conf' does not exist",
    )
    status, reason, _ = call("POST", "/nodes/pve/qemu/9000/status/start")
    assert (status, reason) == (500, "you can't start a vm if it's a template")
    status, _, body = call(
        "PUT", "/nodes/pve/qemu/9000/resize", data={"disk": "scsi0", "size": "1G"}
    )
    assert status == 500  # shrinking
    status, _, _ = call("PUT", "/nodes/pve/qemu/9000/config", json={"cores": 2})
    assert status == 415  # form-encoded only
    proxmox_sim.denied.add("VM.Clone")
    status, reason, _ = call("POST", "/nodes/pve/qemu/9000/clone", data={"newid": "100"})
    assert (status, reason) == (403, "Permission check failed (/vms/9000, VM.Clone)")
    proxmox_sim.denied.clear()
    status, _, body = call("POST", "/nodes/pve/qemu/9000/clone", data={"newid": "100", "name": "a"})
    upid = body["data"]
    assert status == 200 and upid.startswith("UPID:pve:") and ":qmclone:9000:" in upid
    status, _, body = call("GET", f"/nodes/pve/tasks/{upid}/status")
    assert body["data"]["status"] == "running" and "exitstatus" not in body["data"]
    assert call("GET", "/nodes/pve/qemu/100/config")[2]["data"]["lock"] == "clone"
    status, reason, _ = call("POST", "/nodes/pve/qemu/100/status/start")
    assert (status, reason) == (500, "VM is locked (clone)")
