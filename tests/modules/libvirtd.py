"""A libvirt daemon of the tests' own, for the libvirt module type.

``libvirtd`` runs unprivileged (as ``nobody`` when the tests run as root) with its home,
runtime, config and cache folders in a temporary folder: its sockets, its state and its
logs are there, and the machine's own libvirt (if any) is never touched. Through its
socket the tests and the workers reach:

- libvirt's **test driver** (``test+unix:///default?socket=...``): domains, pools,
  volumes and networks held in the daemon's memory, shared by every connection to it.
  That state lives as long as one connection is open: the daemon object keeps one
  (``keeper``) until it is stopped. Its default host has the pool ``default-pool`` and
  the network ``default``; ``start`` adds the base image ``base.qcow2`` (1 GiB).
- the **QEMU session driver** (``qemu+unix:///session?socket=...``) for a real VM under
  QEMU emulation, when qemu-system-x86 is installed.

``stop`` ends the daemon (every domain of the test driver goes with it; QEMU guests are
destroyed by the tests that start them) and removes the folder.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

BASE_IMAGE = "base.qcow2"
POOL = "default-pool"
NETWORK = "default"


def binary():
    return shutil.which("libvirtd") or (
        "/usr/sbin/libvirtd" if os.path.exists("/usr/sbin/libvirtd") else None
    )


def python_binding():
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return False
    return True


class LibvirtDaemon:
    def __init__(self, folder=None):
        self.folder = folder or tempfile.mkdtemp(
            prefix="lvd-"
        )  # short: QEMU socket paths end up under it
        self.process = None
        self.keeper = None
        self.log_path = os.path.join(self.folder, "libvirtd.log")

    @classmethod
    def available(cls):
        return binary() is not None and python_binding()

    @property
    def socket(self):
        return os.path.join(self.folder, "run", "libvirt", "libvirt-sock")

    @property
    def uri(self):
        return f"test+unix:///default?socket={self.socket}"

    @property
    def qemu_uri(self):
        return f"qemu+unix:///session?socket={self.socket}"

    def _env(self):
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": self.folder,
            "XDG_RUNTIME_DIR": os.path.join(self.folder, "run"),
            "XDG_CONFIG_HOME": os.path.join(self.folder, "config"),
            "XDG_CACHE_HOME": os.path.join(self.folder, "cache"),
            "XDG_DATA_HOME": os.path.join(self.folder, "data"),
            "LIBVIRT_LOG_OUTPUTS": f"3:file:{self.log_path}",
        }
        return env

    def start(self):
        import libvirt

        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        command = [binary()]
        if os.geteuid() == 0:
            # a root libvirtd is the system daemon (/run/libvirt, the host's networks):
            # run it as nobody, a session daemon whose everything is in the folder
            os.chown(self.folder, 65534, 65534)
            os.chmod(self.folder, 0o700)
            command = [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
                *command,
            ]
        self.process = subprocess.Popen(
            command,
            env=self._env(),
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._connect()
        pool = self.keeper.storagePoolLookupByName(POOL)
        pool.createXML(
            f"<volume><name>{BASE_IMAGE}</name><capacity unit='G'>1</capacity>"
            "<target><format type='qcow2'/></target></volume>",
            0,
        )
        return self

    def _connect(self, timeout=20.0):
        import libvirt

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"libvirtd exited ({self.process.returncode}): {self.log()}")
            if os.path.exists(self.socket):
                try:
                    self.keeper = libvirt.open(self.uri)
                    return
                except libvirt.libvirtError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd did not answer on {self.socket}: {self.log()}")
            time.sleep(0.1)

    def connect(self, uri=None):
        import libvirt

        return libvirt.open(uri or self.uri)

    def log(self):
        try:
            with open(self.log_path) as fh:
                return fh.read()[-3000:]
        except OSError:
            return ""

    def pause(self):
        """The daemon stops answering (SIGSTOP): connections to it hang."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def cont(self):
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self):
        """The daemon dies: the test driver's state is gone with it."""
        if self.keeper is not None:
            with contextlib.suppress(Exception):
                self.keeper.close()
            self.keeper = None
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        with contextlib.suppress(OSError):
            os.unlink(self.socket)

    def restart(self):
        """Start again after ``kill`` (a fresh test driver: its default host, the base
        image added again)."""
        self.kill()
        return self.start()

    def stop(self):
        if self.keeper is not None:
            with contextlib.suppress(Exception):
                self.keeper.close()
            self.keeper = None
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- what the tests look at -----------------------------------------------------------

    def domains(self, prefix):
        return [d for d in self.keeper.listAllDomains() if d.name().startswith(prefix)]

    def volumes(self, prefix):
        pool = self.keeper.storagePoolLookupByName(POOL)
        pool.refresh(0)
        return [v for v in pool.listVolumes() if v.startswith(prefix)]

    def cleanup(self, prefix):
        """Every domain and volume whose name starts with ``prefix`` removed."""
        import libvirt

        for dom in self.domains(prefix):
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass
        pool = self.keeper.storagePoolLookupByName(POOL)
        for name in self.volumes(prefix):
            with contextlib.suppress(libvirt.libvirtError):
                pool.storageVolLookupByName(name).delete(0)
