"""The libvirt module type: virtual servers on a libvirt host (product type ``vps``).

libvirt is what plain KVM hosts and most VM managers are built on: this type talks to any
libvirt daemon through its URI (``qemu:///system`` on the host itself,
``qemu+ssh://root@kvm1.internal/system`` from elsewhere, ``test+unix:///default`` for
trying it out) with ``libvirt-python``, an optional extra (``pip install
'provisor[libvirt]'``, built against the host's libvirt: Debian's ``libvirt-dev`` and
``pkg-config``). Without it the type is listed, and every operation and "Test connection"
says plainly that libvirt-python is missing.

**A service is one domain** named ``<name prefix><service id>`` (``vps-42``) whose UUID is
derived from the owner tag and the service id (``uuid5``), with one disk: the volume
``vps-42.qcow2`` in the configured storage pool, made from the chosen base image (a qcow2
overlay on it, instant; or a full copy) with the tariff's disk size; one network interface
on the configured network, its MAC derived from the UUID; a guest agent channel.

**Take over, never duplicate.** Every attempt of ``open`` looks the UUID up first and
adopts the domain an earlier attempt defined; the volume is looked up by name and made
only when missing; the domain is started only when it is not running. A domain of the
same name with another UUID (someone else's) is refused by libvirt itself ("domain
'vps-42' already exists with uuid ..."), which is a permanent error: nothing is touched.

**Long steps poll.** After the domain is started, ``open`` returns ``Result.poll``: each
check sets the root password through the QEMU guest agent once it answers
(``credentials = agent``; an SSH key from the order's ``ssh_key`` too) and reads the
address from the network's DHCP leases; when both are there the service is active. No
worker thread waits in between. A shutdown (``suspend_mode = shutdown``) polls likewise
until the domain is off, forcing it off after ``shutdown_timeout``.

**The root password** is generated on the first attempt, stored encrypted in the
operation's state before anything is made (later attempts set the same one), and given to
the client in the details (and the welcome email).

**Errors.** The daemon unreachable or silent (an open given up after ``timeout``), a
connection lost or closed by keepalive, a timeout, a guest agent not answering yet: temporary. What libvirt refuses (invalid XML or arguments,
a name taken, an unsupported function, a missing pool): permanent, in libvirt's words.
Each libvirt call is one line pair in the attempt log (``> LIBVIRT domainDefineXML
vps-42`` ... ``< ok (3 ms)``).
"""

import contextlib
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from modules.base import (
    OWNER_TAG,
    OWNER_TAG_RULE,
    ConfigField,
    ConfigProblem,
    ModuleType,
    PermanentError,
    QuietLog,
    Result,
    TemporaryError,
    operation_password,
)

MISSING = (
    "libvirt-python is not installed: pip install 'provisor[libvirt]' (it builds against "
    "the host's libvirt and needs Debian's libvirt-dev and pkg-config)"
)
# the namespace of the services' domain UUIDs: uuid5(NAMESPACE, "<owner tag>:service-<id>")
NAMESPACE = uuid.UUID("8a3e3c52-0b1f-5f5e-9d27-6f0e2f4c1a11")
METADATA_NS = "https://provisor.dev/xmlns/libvirt/1"
NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
PASSWORD_LENGTH = 20
PASSWORD_PURPOSE = "vps-root-password"
GIB = 1024**3
MIB = 1024**2
IMAGE_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]{0,63})\s*(?:=\s*(\S+))?\s*$")

_lib = None
_lib_lock = threading.Lock()


def library():
    """``libvirt`` (imported on first use, with its event loop running in a thread of
    its own: keepalive needs one), or a PermanentError saying it is not installed."""
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is None:
            try:
                import libvirt as lib
            except ImportError:
                raise PermanentError(MISSING) from None
            lib.registerErrorHandler(lambda _ctx, _err: None, None)  # no stderr noise
            lib.virEventRegisterDefaultImpl()

            def loop():
                while True:
                    lib.virEventRunDefaultImpl()

            threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
            _lib = lib
    return _lib


def available():
    try:
        library()
    except PermanentError:
        return False
    return True


def domain_uuid(owner_tag, service_id):
    """The UUID of a service's domain: the same on every attempt and every worker."""
    return str(uuid.uuid5(NAMESPACE, f"{owner_tag or 'provisor'}:service-{service_id}"))


def mac_for(domain_id):
    """A MAC in QEMU's locally administered range, derived from the domain's UUID."""
    raw = uuid.UUID(domain_id).bytes
    return "52:54:00:" + ":".join(f"{b:02x}" for b in raw[-3:])


def parse_images(text):
    """``[(name, volume)]`` from the tariff's images: one a line, ``name = volume`` or a
    volume alone (then its name is the volume's without a ``.qcow2``/``.img`` ending)."""
    images = []
    for number, line in enumerate((text or "").splitlines(), 1):
        if not line.strip() or line.strip().startswith("#"):
            continue
        found = IMAGE_LINE.match(line)
        if not found:
            raise ValueError(f"line {number}: name = volume (e.g. debian-12 = debian-12.qcow2)")
        name, volume = found.group(1), found.group(2)
        if volume is None:
            volume = name
            name = re.sub(r"\.(qcow2|img|raw)$", "", name)
        if not NAME.match(volume):
            raise ValueError(f"line {number}: {volume!r} is not a volume name")
        if any(n == name for n, _ in images):
            raise ValueError(f"line {number}: {name} is listed twice")
        images.append((name, volume))
    return images


def _size(value, unit):
    return int(value) * unit


@dataclass
class Plan:
    """A tariff's VM plan (its item)."""

    vcpus: int
    memory_mib: int
    disk_gib: int
    images: list  # [(name, volume)]

    def image(self, wanted):
        """The volume of the image ``wanted`` (None: the first), or a PermanentError."""
        if not self.images:
            raise PermanentError("the tariff's plan lists no image and the module has none")
        if not wanted:
            return self.images[0]
        for name, volume in self.images:
            if name == wanted:
                return name, volume
        offered = ", ".join(n for n, _ in self.images)
        raise PermanentError(f"the image {wanted!r} is not offered by this tariff ({offered})")


class Session:
    """One connection to the daemon; each libvirt call is one logged remote call."""

    def __init__(self, module, ctx=None):
        self.module = module
        self.ctx = ctx if ctx is not None else QuietLog()
        self.lib = library()
        self.conn = None

    def __enter__(self):
        uri = self.module.config.get("uri")
        lib = self.lib
        with self.ctx.call("CONNECT", uri) as call:
            try:
                self.conn = self._open(uri)
                seconds = self.module.call_timeout()
                # a daemon that stops answering closes the connection after about
                # ``timeout`` seconds (interval × (count + 1)), and the call fails
                self.conn.setKeepAlive(max(1, int(seconds // 3)), 2)
            except lib.libvirtError as exc:
                call.outcome = describe(exc)
                self.close()
                raise self.error(exc, None) from None
            call.outcome = f"{self.conn.getType()} (libvirt {version(self.conn.getLibVersion())})"
        return self

    def _open(self, uri):
        """``virConnectOpen``, given up after ``timeout`` seconds.

        The open has no timeout of its own (keepalive starts once it returns): a daemon
        that accepts the connection and never answers (hung, or behind a stuck tunnel)
        would hold it for ever, a C call out of reach of the attempt's deadline, and the
        attempt would outlive its lease. It runs in a thread of its own; given up, that
        thread is left to finish and closes what it opened if it ever does (an open does
        nothing on the daemon)."""
        lib = self.lib
        seconds = self.module.call_timeout()
        lock = threading.Lock()
        done = threading.Event()
        outcome = {}

        def opener():
            try:
                result = ("conn", lib.open(uri))
            except BaseException as exc:  # a libvirtError, raised in the caller's thread
                result = ("error", exc)
            with lock:
                if not outcome.get("abandoned"):
                    outcome[result[0]] = result[1]
                    done.set()
                    return
            if result[0] == "conn":  # too late: nobody uses it
                with contextlib.suppress(Exception):
                    result[1].close()

        threading.Thread(target=opener, name="libvirt-open", daemon=True).start()
        done.wait(seconds)
        with lock:
            if not done.is_set():
                outcome["abandoned"] = True
                raise TemporaryError(
                    f"cannot connect to libvirt at {uri}: no answer within {seconds:g} s"
                )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["conn"]

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    def call(self, what, function, *args, missing=None):
        """``function(*args)`` logged as ``> LIBVIRT what``; a libvirt error becomes a
        Temporary- or PermanentError, except the error code ``missing`` (not found),
        which returns None."""
        with self.ctx.call("LIBVIRT", what) as call:
            try:
                result = function(*args)
            except self.lib.libvirtError as exc:
                if missing is not None and exc.get_error_code() in missing:
                    call.outcome = "not found"
                    return None
                call.outcome = describe(exc)
                raise self.error(exc, what) from None
        return result

    def error(self, exc, doing):
        said = describe(exc)
        uri = self.module.config.get("uri")
        if temporary(self.lib, exc):
            if doing is None:
                return TemporaryError(f"cannot connect to libvirt at {uri}: {said}")
            return TemporaryError(f"libvirt at {uri}: {said} ({doing})")
        if doing is None:
            return PermanentError(f"libvirt at {uri} refused the connection: {said}")
        return PermanentError(f"libvirt refused {doing}: {said}")

    # --- lookups --------------------------------------------------------------------------

    def domain(self, domain_id):
        lib = self.lib
        return self.call(
            f"domainLookupByUUID {domain_id}",
            self.conn.lookupByUUIDString,
            domain_id,
            missing={lib.VIR_ERR_NO_DOMAIN},
        )

    def pool(self, name):
        lib = self.lib
        return self.call(
            f"storagePoolLookupByName {name}",
            self.conn.storagePoolLookupByName,
            name,
            missing={lib.VIR_ERR_NO_STORAGE_POOL},
        )

    def network(self, name):
        lib = self.lib
        return self.call(
            f"networkLookupByName {name}",
            self.conn.networkLookupByName,
            name,
            missing={lib.VIR_ERR_NO_NETWORK},
        )

    def volume(self, pool, name):
        lib = self.lib
        return self.call(
            f"storageVolLookupByName {pool.name()}/{name}",
            pool.storageVolLookupByName,
            name,
            missing={lib.VIR_ERR_NO_STORAGE_VOL},
        )

    def state(self, dom):
        """``running``, ``paused``, ``shutoff``... (libvirt's domain state)."""
        code = self.call(f"domainGetState {dom.name()}", dom.state)[0]
        return STATES.get(code, f"state {code}")


STATES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shutoff",
    6: "crashed",
    7: "pmsuspended",
}
RUNNING = ("running", "blocked", "paused", "shutdown", "pmsuspended")


def version(number):
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def describe(exc):
    """libvirt's own words for an error (one line)."""
    text = exc.get_error_message() if hasattr(exc, "get_error_message") else None
    return " ".join(str(text or exc).split())[:400] or exc.__class__.__name__


def temporary(lib, exc):
    """Whether a libvirt error is worth retrying: the daemon or its transport is down or
    timed out, or the guest (agent) is not ready yet. Refusals are permanent."""
    code, domain = exc.get_error_code(), exc.get_error_domain()
    if code in (lib.VIR_ERR_AUTH_FAILED, lib.VIR_ERR_AUTH_CANCELLED):
        return False
    if code in (
        lib.VIR_ERR_NO_CONNECT,
        lib.VIR_ERR_RPC,
        lib.VIR_ERR_OPERATION_TIMEOUT,
        lib.VIR_ERR_AGENT_UNRESPONSIVE,
        lib.VIR_ERR_AUTH_UNAVAILABLE,
        lib.VIR_ERR_OPERATION_ABORTED,
        lib.VIR_ERR_NO_MEMORY,
    ):
        return True
    # the transport: a socket that is gone, ssh failing, a keepalive timeout
    return domain in (lib.VIR_FROM_RPC, lib.VIR_FROM_REMOTE, lib.VIR_FROM_SSH, lib.VIR_FROM_LIBSSH)


class LibvirtModule(ModuleType):
    id = "libvirt"
    name = "libvirt (virtual servers)"
    description = (
        "A virtual server per service on a libvirt host (KVM/QEMU): its disk from a base "
        "image, started, root password set through the guest agent, address from DHCP. "
        "Needs the libvirt extra (pip install 'provisor[libvirt]')."
    )
    operations = frozenset({"open", "suspend", "resume", "close", "change_tariff", "ensure_item"})
    product_types = ("vps",)
    client_data = ("uuid", "vcpus", "memory", "disk", "image", "pending_changes")
    state_secrets = {"password": PASSWORD_PURPOSE}
    default_timeout = 30.0
    CALLS_PER_ATTEMPT = 16  # the most libvirt calls one attempt makes (open)
    config_fields = [
        ConfigField(
            "uri",
            "Connection URI",
            required=True,
            default="qemu:///system",
            help="qemu:///system (this host), qemu+ssh://root@kvm1.internal/system (the "
            "worker's SSH key), test+unix:///default (libvirt's test driver).",
        ),
        ConfigField("pool", "Storage pool", required=True, default="default"),
        ConfigField(
            "network",
            "Network",
            default="default",
            help="The libvirt network the VMs are on (its DHCP leases give their addresses).",
        ),
        ConfigField(
            "nic",
            "Network interface",
            kind="choice",
            default="network",
            options=(
                ("network", "on the network above"),
                ("user", "QEMU user-mode networking (outbound only, no address reported)"),
            ),
        ),
        ConfigField(
            "base_image",
            "Base image volume",
            help="A volume of the pool that new disks are made from, when the tariff's plan "
            "lists no images of its own (e.g. debian-12.qcow2).",
        ),
        ConfigField(
            "disk_mode",
            "New disks",
            kind="choice",
            default="overlay",
            options=(
                ("overlay", "qcow2 over the base image (instant; file-based pools)"),
                ("copy", "a full copy of the base image (any pool; takes a while)"),
            ),
        ),
        ConfigField(
            "virt_type",
            "Virtualization",
            kind="choice",
            default="auto",
            options=(
                ("auto", "auto (KVM when the host has it, else QEMU emulation)"),
                ("kvm", "KVM"),
                ("qemu", "QEMU emulation (TCG)"),
            ),
        ),
        ConfigField(
            "credentials",
            "Root password",
            kind="choice",
            default="agent",
            options=(
                ("agent", "generated, set through the QEMU guest agent"),
                ("none", "not set (the image brings its own access)"),
            ),
        ),
        ConfigField(
            "suspend_mode",
            "Suspension",
            kind="choice",
            default="pause",
            options=(
                ("pause", "pause the VM (memory kept; resume continues)"),
                ("shutdown", "shut it down (resume starts it)"),
            ),
        ),
        ConfigField(
            "shutdown_timeout",
            "Force off after (s)",
            kind="int",
            default=60,
            minimum=0,
            maximum=3600,
            help="Suspension by shutdown: how long the guest gets to shut down cleanly.",
        ),
        ConfigField(
            "agent_wait",
            "Wait for the guest agent (s)",
            kind="int",
            default=600,
            minimum=0,
            maximum=86400,
            help="How long open waits for the guest agent to set the root password.",
        ),
        ConfigField(
            "ip_wait",
            "Wait for an address (s)",
            kind="int",
            default=300,
            minimum=0,
            maximum=86400,
            help="How long open waits for a DHCP lease before it finishes without an address.",
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
            help="Domains are named <prefix><service id> (vps-42), their disks "
            "<prefix><service id>.qcow2. Up to 16 lowercase letters, digits and -.",
        ),
        ConfigField(
            "owner_tag",
            "Owner tag",
            default="provisor",
            help="The domains' UUIDs are derived from <tag>:service-<id>. Each Provisor "
            "sharing a host needs its own tag.",
        ),
        ConfigField(
            "timeout",
            "Timeout (s)",
            kind="float",
            default=30.0,
            minimum=2,
            maximum=600,
            help="For connecting and for each call (a daemon that stops answering is "
            "given up by keepalive after about this long).",
        ),
        ConfigField(
            "copy_timeout",
            "Copy timeout (s)",
            kind="float",
            default=1800.0,
            minimum=10,
            maximum=86400,
            help="New disks by full copy: the longest the copy may take.",
        ),
    ]
    item_fields = [
        ConfigField("vcpus", "vCPUs", kind="int", default=1, minimum=1, maximum=512),
        ConfigField(
            "memory_mib", "Memory (MiB)", kind="int", default=1024, minimum=64, maximum=4194304
        ),
        ConfigField("disk_gib", "Disk (GiB)", kind="int", default=20, minimum=1, maximum=65536),
        ConfigField(
            "images",
            "Base images",
            kind="text",
            help="The images a client chooses from (order field os_image), one a line: "
            "name = volume of the pool (debian-12 = debian-12.qcow2); the first is the "
            "default. Empty: the module's base image.",
        ),
    ]

    # --- settings -------------------------------------------------------------------------

    @classmethod
    def validate_config(cls, data):
        cleaned, errors = super().validate_config(data)
        uri = cleaned.get("uri") or ""
        if "uri" not in errors and uri and not re.match(r"^[a-z][a-z0-9+.-]*:///?", uri):
            errors["uri"] = "A libvirt URI such as qemu:///system or qemu+ssh://host/system."
        for name in ("pool", "network", "base_image"):
            value = cleaned.get(name)
            if name not in errors and value and not NAME.match(value):
                errors[name] = "A libvirt object name (letters, digits, . _ + -)."
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
        if "images" not in errors:
            try:
                parse_images(cleaned.get("images"))
            except ValueError as exc:
                errors["images"] = str(exc)
        return cleaned, errors

    def call_timeout(self):
        return float(self.config.get("timeout") or self.default_timeout)

    def timeout(self):
        seconds = self.call_timeout() * self.CALLS_PER_ATTEMPT
        if self.config.get("disk_mode") == "copy":
            seconds += float(self.config.get("copy_timeout") or 1800)
        return seconds

    def io_timeout(self):
        """One call: keepalive gives a silent daemon up after about ``timeout``; a full
        copy of a base image is one call that takes as long as it takes."""
        if self.config.get("disk_mode") == "copy":
            return float(self.config.get("copy_timeout") or 1800) + self.call_timeout()
        return self.call_timeout() + 5.0

    def session(self, ctx=None):
        return Session(self, ctx)

    def network_name(self):
        """The libvirt network of the VMs' interface (None: user-mode networking)."""
        if (self.config.get("nic") or "network") == "user":
            return None
        return self.config.get("network") or "default"

    def owner_tag(self):
        return self.config.get("owner_tag") or "provisor"

    def uuid_for(self, service_id):
        return domain_uuid(self.owner_tag(), service_id)

    def name_for(self, service_id):
        return f"{self.config.get('name_prefix') or 'vps-'}{service_id}"

    def volume_name(self, domain_name):
        return f"{domain_name}.qcow2"

    def images(self, settings):
        """``[(name, volume)]``: the tariff's images, else the module's base image."""
        images = parse_images((settings or {}).get("images"))
        if not images and self.config.get("base_image"):
            base = self.config["base_image"]
            images = [(re.sub(r"\.(qcow2|img|raw)$", "", base), base)]
        return images

    def order_field_options(self, item_settings):
        """The OS image a client chooses (order field ``os_image``): the tariff's images."""
        try:
            return {"os_image": [name for name, _ in self.images(item_settings)]}
        except ValueError:
            return {"os_image": []}  # the tariff's images cannot be read: nothing to offer

    def plan(self, ctx):
        settings = ctx.item_settings
        if not settings and ctx.item is not None:
            settings = ctx.item.settings
        settings = settings or {}
        try:
            images = self.images(settings)
        except ValueError as exc:
            raise PermanentError(f"the tariff's images: {exc}") from None
        return Plan(
            vcpus=int(settings.get("vcpus") or 1),
            memory_mib=int(settings.get("memory_mib") or 1024),
            disk_gib=int(settings.get("disk_gib") or 20),
            images=images,
        )

    # --- the pieces of every operation ----------------------------------------------------

    def _virt(self, session):
        """``(domain type, arch, emulator)`` for new domains, from the host's capabilities."""
        caps = ET.fromstring(session.call("connectGetCapabilities", session.conn.getCapabilities))
        wanted = self.config.get("virt_type") or "auto"
        order = ("kvm", "qemu", "test") if wanted == "auto" else (wanted,)
        found = {}
        for guest in caps.findall("guest"):
            if (guest.findtext("os_type") or "") != "hvm":
                continue
            arch = guest.find("arch")
            if arch is None:
                continue
            for dom in arch.findall("domain"):
                found.setdefault((dom.get("type"), arch.get("name")), True)
        for kind in order:
            for arch in ("x86_64", "aarch64", "i686"):
                if (kind, arch) in found:
                    return kind, arch
            for known_kind, arch in found:
                if known_kind == kind:
                    return kind, arch
        have = ", ".join(sorted({k for k, _ in found})) or "none"
        raise PermanentError(
            f"the host cannot run {wanted} guests (hvm domain types it offers: {have})"
        )

    def domain_xml(self, ctx, name, domain_id, plan, volume, hostname, virt, arch):
        pool = self.config.get("pool")
        network = self.network_name()
        agent = ""
        if virt != "test":
            agent = (
                "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>"
                "</channel><serial type='pty'/><console type='pty'/>"
            )
        mark = f"{self.owner_tag()}:service-{ctx.service.id}"
        return (
            f"<domain type={quoteattr(virt)}>"
            f"<name>{escape(name)}</name><uuid>{domain_id}</uuid>"
            f"<title>{escape(hostname)}</title><description>{escape(mark)}</description>"
            f"<metadata><provisor:service xmlns:provisor={quoteattr(METADATA_NS)} "
            f"id='{int(ctx.service.id)}' owner={quoteattr(self.owner_tag())}/></metadata>"
            f"<memory unit='MiB'>{plan.memory_mib}</memory>"
            f"<currentMemory unit='MiB'>{plan.memory_mib}</currentMemory>"
            f"<vcpu>{plan.vcpus}</vcpu>"
            f"<os><type arch={quoteattr(arch)}>hvm</type><boot dev='hd'/></os>"
            "<features><acpi/><apic/></features>"
            "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot>"
            "<on_crash>destroy</on_crash>"
            "<devices>"
            "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source pool={quoteattr(pool)} volume={quoteattr(volume)}/>"
            "<target dev='vda' bus='virtio'/></disk>"
            + (
                f"<interface type='network'><source network={quoteattr(network)}/>"
                if network
                else "<interface type='user'>"
            )
            + f"<mac address='{mac_for(domain_id)}'/><model type='virtio'/></interface>"
            f"{agent}"
            "</devices></domain>"
        )

    def _make_volume(self, session, pool, name, plan, image_volume):
        """The service's disk from the base image, ``disk_gib`` large."""
        base = session.volume(pool, image_volume)
        if base is None:
            raise PermanentError(
                f"the base image {image_volume} is not in the storage pool {pool.name()}"
            )
        info = session.call(f"storageVolGetInfo {pool.name()}/{image_volume}", base.info)
        capacity = _size(plan.disk_gib, GIB)
        if info[1] > capacity:
            raise PermanentError(
                f"the tariff's disk ({plan.disk_gib} GiB) is smaller than the image "
                f"{image_volume} ({info[1] / GIB:.1f} GiB)"
            )
        desc = ET.fromstring(session.call(f"storageVolGetXMLDesc {image_volume}", base.XMLDesc, 0))
        base_format = desc.find("target/format")
        base_format = base_format.get("type") if base_format is not None else "raw"
        if (self.config.get("disk_mode") or "overlay") == "copy":
            xml = (
                f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{capacity}</capacity><allocation>0</allocation>"
                "<target><format type='qcow2'/></target></volume>"
            )
            return session.call(
                f"storageVolCreateXMLFrom {pool.name()}/{name} (a copy of {image_volume})",
                pool.createXMLFrom,
                xml,
                base,
                0,
            )
        path = session.call(f"storageVolGetPath {image_volume}", base.path)
        xml = (
            f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{capacity}</capacity><allocation>0</allocation>"
            "<target><format type='qcow2'/></target>"
            f"<backingStore><path>{escape(path)}</path><format type={quoteattr(base_format)}/>"
            "</backingStore></volume>"
        )
        return session.call(
            f"storageVolCreateXML {pool.name()}/{name} (qcow2 over {image_volume})",
            pool.createXML,
            xml,
            0,
        )

    def _own(self, session, ctx):
        """The service's domain (a PermanentError when it is gone)."""
        domain_id = (ctx.service_data or {}).get("uuid") or self.uuid_for(ctx.service.id)
        dom = session.domain(domain_id)
        if dom is None:
            raise PermanentError(
                f"the domain {domain_id} ({ctx.service.remote_id or self.name_for(ctx.service.id)})"
                " is not on the host (undefined by hand?)"
            )
        return dom

    def _address(self, session, dom):
        """The domain's IPv4 address from the network's DHCP leases (None: no lease)."""
        lib = session.lib
        if not self.network_name():
            return None  # user-mode networking: no lease to read
        found = None
        with session.ctx.call("LIBVIRT", f"domainInterfaceAddresses {dom.name()} (lease)") as call:
            try:
                found = dom.interfaceAddresses(lib.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
            except lib.libvirtError as exc:
                call.outcome = describe(exc)
                if exc.get_error_code() != lib.VIR_ERR_NO_SUPPORT:
                    raise session.error(exc, f"domainInterfaceAddresses {dom.name()}") from None
            else:
                count = sum(len(i.get("addrs") or []) for i in found.values())
                call.outcome = f"{count} address(es)"
        if found is None:  # the driver cannot: the network's leases for the domain's MAC
            network = session.network(self.network_name())
            mac = mac_for(dom.UUIDString())
            leases = session.call(f"networkGetDHCPLeases {mac}", network.DHCPLeases, mac) or []
            found = {
                f"lease{n}": {"addrs": [{"addr": lease["ipaddr"], "type": lease["type"]}]}
                for n, lease in enumerate(leases)
            }
        for iface in found.values():
            for addr in iface.get("addrs") or []:
                if addr.get("type") == lib.VIR_IP_ADDR_TYPE_IPV4:
                    return addr["addr"]
        return None

    # --- operations -----------------------------------------------------------------------

    def open(self, ctx):
        name = ctx.service.remote_id or self.name_for(ctx.service.id)
        domain_id = self.uuid_for(ctx.service.id)
        plan = self.plan(ctx)
        image, image_volume = plan.image((ctx.params or {}).get("os_image"))
        hostname = (ctx.params or {}).get("hostname") or name
        password = None
        if (self.config.get("credentials") or "agent") == "agent":
            password = operation_password(ctx, PASSWORD_PURPOSE, PASSWORD_LENGTH)
        state = dict(ctx.state)
        with self.session(ctx) as session:
            dom = session.domain(domain_id)
            if state.get("started_at") is None:
                dom = self._create(ctx, session, dom, name, domain_id, plan, image_volume, hostname)
                state["started_at"] = time.time()
                ctx.save_state(state)
                return Result.poll(after=self._interval(), state=state)
            if dom is None:
                raise PermanentError(f"the domain {name} ({domain_id}) vanished while it booted")
            # the long steps: the guest agent sets the credentials, DHCP gives an address
            waited = time.time() - float(state["started_at"])
            if password is not None and not state.get("password_set"):
                if not self._set_credentials(ctx, session, dom, password, waited):
                    return Result.poll(after=self._interval(), state=state)
                state["password_set"] = True
                ctx.save_state(state)
            address = self._address(session, dom)
            ip_wait = int(
                self.config.get("ip_wait") if self.config.get("ip_wait") is not None else 300
            )
            if not self.network_name():
                ip_wait = 0
                ctx.log("user-mode networking: no address to report")
            if address is None and waited < ip_wait:
                ctx.log(
                    f"no DHCP lease yet for {mac_for(domain_id)} ({waited:.0f} s of {ip_wait} s)"
                )
                return Result.poll(after=self._interval(), state=state)
            if address is None:
                ctx.log(f"no DHCP lease after {ip_wait} s: the address is not known")
        details = {
            "hostname": hostname,
            "ip": address or "",
            "username": "root",
        }
        if password is not None:
            details["password"] = password
        return Result.done(
            remote_id=name,
            details=details,
            data={
                "uuid": domain_id,
                "vcpus": plan.vcpus,
                "memory": f"{plan.memory_mib} MiB",
                "disk": f"{plan.disk_gib} GiB",
                "image": image,
                "volume": f"{self.config.get('pool')}/{self.volume_name(name)}",
                "pending_changes": "",
            },
        )

    def _interval(self):
        return float(self.config.get("poll_interval") or 5.0)

    def _create(self, ctx, session, dom, name, domain_id, plan, image_volume, hostname):
        """Define the domain (or take over the one an earlier attempt defined), make its
        disk when missing, start it when it is not running."""
        if dom is not None:
            ctx.log(
                f"the domain {domain_id} exists (an earlier attempt defined it): taking it over"
            )
        else:
            virt, arch = self._virt(session)
            xml = self.domain_xml(
                ctx, name, domain_id, plan, self.volume_name(name), hostname, virt, arch
            )
            # a domain of this name with another UUID is refused here, by libvirt
            dom = session.call(f"domainDefineXML {name} ({domain_id})", session.conn.defineXML, xml)
        pool = session.pool(self.config.get("pool"))
        if pool is None:
            raise PermanentError(f"the storage pool {self.config.get('pool')} does not exist")
        volume = self.volume_name(name)
        if session.volume(pool, volume) is None:
            self._make_volume(session, pool, volume, plan, image_volume)
        else:
            ctx.log(f"the volume {pool.name()}/{volume} exists: taking it over")
        if session.state(dom) in RUNNING:
            ctx.log(f"{name} is running already")
        else:
            session.call(f"domainCreate {name}", dom.create)
            ctx.log(
                f"{name} started ({plan.vcpus} vCPU, {plan.memory_mib} MiB, {plan.disk_gib} GiB)"
            )
        return dom

    def _set_credentials(self, ctx, session, dom, password, waited):
        """Set the root password (and the order's SSH key) through the guest agent; False
        while the agent does not answer yet (within ``agent_wait``)."""
        lib = session.lib
        agent_wait = int(
            self.config.get("agent_wait") if self.config.get("agent_wait") is not None else 600
        )
        try:
            with session.ctx.call("LIBVIRT", f"domainSetUserPassword {dom.name()} root") as call:
                try:
                    dom.setUserPassword("root", password, 0)
                except lib.libvirtError as exc:
                    call.outcome = describe(exc)
                    raise
            key = ((ctx.params or {}).get("ssh_key") or "").strip()
            if key:
                session.call(
                    f"domainAuthorizedSSHKeysSet {dom.name()} root",
                    dom.authorizedSSHKeysSet,
                    "root",
                    [key],
                    lib.VIR_DOMAIN_AUTHORIZED_SSH_KEYS_SET_APPEND,
                )
        except lib.libvirtError as exc:
            not_yet = exc.get_error_code() in (
                lib.VIR_ERR_AGENT_UNRESPONSIVE,
                lib.VIR_ERR_OPERATION_TIMEOUT,
            )
            if not not_yet:
                raise session.error(exc, f"domainSetUserPassword {dom.name()}") from None
            if waited >= agent_wait:
                raise PermanentError(
                    f"the guest agent of {dom.name()} did not answer within {agent_wait} s, "
                    f"so the root password is not set: {describe(exc)}"
                ) from None
            ctx.log(f"the guest agent does not answer yet ({waited:.0f} s of {agent_wait} s)")
            return False
        ctx.log(
            "the root password is set"
            + (" and the SSH key added" if (ctx.params or {}).get("ssh_key") else "")
        )
        return True

    def suspend(self, ctx):
        with self.session(ctx) as session:
            dom = self._own(session, ctx)
            state = session.state(dom)
            if (self.config.get("suspend_mode") or "pause") == "pause":
                if state == "paused":
                    ctx.log(f"{dom.name()} is paused already")
                elif state in RUNNING:
                    session.call(f"domainSuspend {dom.name()}", dom.suspend)
                else:
                    ctx.log(f"{dom.name()} is {state}: nothing to pause")
                return Result.done(remote_id=dom.name())
            return self._shut_down(ctx, session, dom, state)

    def _shut_down(self, ctx, session, dom, state):
        """Suspension by shutdown: ask the guest (ACPI), poll until it is off, force it
        off after ``shutdown_timeout``."""
        if state not in RUNNING:
            ctx.log(f"{dom.name()} is {state}")
            return Result.done(remote_id=dom.name())
        saved = dict(ctx.state)
        if state == "paused":
            session.call(f"domainDestroy {dom.name()} (paused)", dom.destroy)
            return Result.done(remote_id=dom.name())
        limit = int(
            self.config.get("shutdown_timeout")
            if self.config.get("shutdown_timeout") is not None
            else 60
        )
        if saved.get("shutdown_at") is None:
            session.call(f"domainShutdown {dom.name()}", dom.shutdown)
            saved["shutdown_at"] = time.time()
            ctx.save_state(saved)
        waited = time.time() - float(saved["shutdown_at"])
        if session.state(dom) not in RUNNING:
            return Result.done(remote_id=dom.name())
        if waited >= limit:
            ctx.log(f"{dom.name()} did not shut down within {limit} s: forced off")
            session.call(f"domainDestroy {dom.name()}", dom.destroy)
            return Result.done(remote_id=dom.name())
        return Result.poll(after=min(self._interval(), max(limit - waited, 0.2)), state=saved)

    def resume(self, ctx):
        with self.session(ctx) as session:
            dom = self._own(session, ctx)
            state = session.state(dom)
            if state == "paused":
                session.call(f"domainResume {dom.name()}", dom.resume)
            elif state in RUNNING:
                ctx.log(f"{dom.name()} is {state} already")
            else:
                session.call(f"domainCreate {dom.name()}", dom.create)
            return Result.done(remote_id=dom.name())

    def change_tariff(self, ctx):
        plan = self.plan(ctx)
        lib = library()
        with self.session(ctx) as session:
            dom = self._own(session, ctx)
            config = lib.VIR_DOMAIN_AFFECT_CONFIG
            kib = plan.memory_mib * 1024
            name = dom.name()
            # the maximum first, so that growing fits; then the value itself
            session.call(
                f"domainSetVcpusFlags {name} {plan.vcpus} (config, maximum)",
                dom.setVcpusFlags,
                plan.vcpus,
                config | lib.VIR_DOMAIN_VCPU_MAXIMUM,
            )
            session.call(
                f"domainSetVcpusFlags {name} {plan.vcpus} (config)",
                dom.setVcpusFlags,
                plan.vcpus,
                config,
            )
            session.call(
                f"domainSetMemoryFlags {name} {plan.memory_mib} MiB (config, maximum)",
                dom.setMemoryFlags,
                kib,
                config | lib.VIR_DOMAIN_MEM_MAXIMUM,
            )
            session.call(
                f"domainSetMemoryFlags {name} {plan.memory_mib} MiB (config)",
                dom.setMemoryFlags,
                kib,
                config,
            )
            running = session.state(dom) in RUNNING
        pending = (
            f"{plan.vcpus} vCPU and {plan.memory_mib} MiB apply at the next boot (the VM is running)"
            if running
            else ""
        )
        ctx.log(pending or f"{name}: {plan.vcpus} vCPU, {plan.memory_mib} MiB from its next start")
        data = {"vcpus": plan.vcpus, "memory": f"{plan.memory_mib} MiB", "pending_changes": pending}
        return Result.done(remote_id=name, data=data)

    def close(self, ctx):
        lib = library()
        name = ctx.service.remote_id or self.name_for(ctx.service.id)
        domain_id = (ctx.service_data or {}).get("uuid") or self.uuid_for(ctx.service.id)
        with self.session(ctx) as session:
            dom = session.domain(domain_id)
            volumes = []
            if dom is not None:
                name = dom.name()
                volumes = self._volumes(session, dom)
                if session.state(dom) in RUNNING:
                    session.call(f"domainDestroy {name}", dom.destroy)
                flags = (
                    lib.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | lib.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                )
                xml = session.call(
                    f"domainGetXMLDesc {name}", dom.XMLDesc, lib.VIR_DOMAIN_XML_INACTIVE
                )
                if "<nvram" in xml:
                    flags |= lib.VIR_DOMAIN_UNDEFINE_NVRAM
                checkpoints = session.call(
                    f"domainListAllCheckpoints {name}",
                    lambda: dom.listAllCheckpoints(0),
                    missing={lib.VIR_ERR_NO_SUPPORT},
                )
                if checkpoints:
                    flags |= lib.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                session.call(
                    f"domainUndefineFlags {name} (snapshots, managed save{', NVRAM' if '<nvram' in xml else ''})",
                    dom.undefineFlags,
                    flags,
                )
            else:
                ctx.log(f"the domain {domain_id} is gone already")
            # the service's own disk, also when the domain is gone (an open that died
            # between making the disk and defining the domain never happens: define first)
            pool = session.pool(self.config.get("pool"))
            own = self.volume_name(name)
            if pool is not None and own not in [v for p, v in volumes if p == pool.name()]:
                volumes.append((pool.name(), own))
            for pool_name, volume_name in volumes:
                target_pool = (
                    pool
                    if pool is not None and pool.name() == pool_name
                    else session.pool(pool_name)
                )
                if target_pool is None:
                    continue
                vol = session.volume(target_pool, volume_name)
                if vol is None:
                    continue
                session.call(f"storageVolDelete {pool_name}/{volume_name}", vol.delete, 0)
        return Result.done(remote_id=name)

    def _volumes(self, session, dom):
        """The volumes the domain's disks are (``(pool, volume)``), only those named after
        the domain: a shared image attached by hand is never deleted."""
        lib = session.lib
        xml = ET.fromstring(
            session.call(f"domainGetXMLDesc {dom.name()}", dom.XMLDesc, lib.VIR_DOMAIN_XML_INACTIVE)
        )
        found = []
        for disk in xml.findall("devices/disk"):
            source = disk.find("source")
            if disk.get("type") == "volume" and source is not None:
                volume = source.get("volume") or ""
                if volume.startswith(dom.name() + "."):
                    found.append((source.get("pool"), volume))
        return found

    def ensure_item(self, ctx):
        """The tariff's plan can be served: the pool, the network and each base image
        exist (and fit the disk size)."""
        plan = self.plan(ctx)
        with self.session(ctx) as session:
            problems = self._problems(session, [v for _, v in plan.images], plan.disk_gib)
            if not plan.images:
                problems.append(
                    "no base image: list the tariff's images or set the module's base image"
                )
            if problems:
                raise PermanentError("; ".join(problems))
            ctx.log(
                f"pool {self.config.get('pool')}, network {self.network_name() or '(user-mode)'} and "
                f"images {', '.join(v for _, v in plan.images)} are there"
            )
        return Result.done()

    def _problems(self, session, images, disk_gib=None):
        """What is missing on the host (the pool, the network, the ``images`` volumes,
        an image larger than ``disk_gib``), each said precisely: ``[(setting, text)]``."""
        problems = []
        uri = self.config.get("uri")
        pool_name, network_name = self.config.get("pool"), self.network_name()
        pool = session.pool(pool_name)
        if pool is None:
            pools = session.call("connectListAllStoragePools", session.conn.listAllStoragePools)
            names = ", ".join(sorted(p.name() for p in pools)) or "none"
            problems.append(
                f"the storage pool {pool_name} does not exist on {uri} (pools there: {names})"
            )
        elif not session.call(f"storagePoolIsActive {pool_name}", pool.isActive):
            problems.append(
                f"the storage pool {pool_name} is not active (virsh pool-start {pool_name})"
            )
        network = session.network(network_name) if network_name else True
        if network is None:
            nets = session.call("connectListAllNetworks", session.conn.listAllNetworks)
            names = ", ".join(sorted(n.name() for n in nets)) or "none"
            problems.append(
                f"the network {network_name} does not exist on {uri} (networks there: {names})"
            )
        elif network_name and not session.call(f"networkIsActive {network_name}", network.isActive):
            problems.append(
                f"the network {network_name} is not active (virsh net-start {network_name})"
            )
        if pool is not None:
            for volume in images:
                vol = session.volume(pool, volume)
                if vol is None:
                    problems.append(
                        f"the base image {volume} is not in the storage pool {pool_name}"
                    )
                    continue
                capacity = session.call(f"storageVolGetInfo {pool_name}/{volume}", vol.info)[1]
                if disk_gib is not None and capacity > disk_gib * GIB:
                    problems.append(
                        f"the image {volume} ({capacity / GIB:.1f} GiB) is larger than the "
                        f"tariff's disk ({disk_gib} GiB)"
                    )
        return problems

    # --- Test connection ------------------------------------------------------------------

    def check_config(self):
        try:
            library()
        except PermanentError as exc:
            raise ConfigProblem(str(exc), field="uri") from None
        started = time.monotonic()
        base = self.config.get("base_image")
        try:
            with self.session() as session:
                conn = session.conn
                kind = session.call("connectGetType", conn.getType)
                host = session.call("connectGetHostname", conn.getHostname)
                problems = self._problems(session, [base] if base else [])
        except (TemporaryError, PermanentError) as exc:
            raise ConfigProblem(str(exc), field="uri") from None
        for problem in problems:
            field = "base_image"
            if "storage pool" in problem and "base image" not in problem:
                field = "pool"
            elif "network" in problem:
                field = "network"
            raise ConfigProblem(problem, field=field)
        elapsed = (time.monotonic() - started) * 1000
        found = f"{kind} on {host} answers ({elapsed:.0f} ms); the pool "
        found += f"{self.config.get('pool')} and the network {self.network_name() or '(user-mode)'}"
        return found + (f" and the base image {base} are there" if base else " are there")
