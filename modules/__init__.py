"""Processing module types and their registry.

Built-in and third-party types are found alike, through the ``provisor.modules``
entry-point group (see ``modules.base`` for the interface). :func:`register` adds a type
by hand (tests, plugins loaded in code).
"""

import logging
import threading
from importlib.metadata import entry_points

from modules.base import (
    ConfigField,
    ConfigProblem,
    ModuleType,
    OperationContext,
    PermanentError,
    Result,
    TemporaryError,
)

log = logging.getLogger(__name__)

__all__ = [
    "ConfigField",
    "ConfigProblem",
    "ModuleType",
    "OperationContext",
    "PermanentError",
    "Result",
    "TemporaryError",
    "get_type",
    "register",
    "types",
]

BUILTIN = {
    "sandbox": "modules.sandbox:SandboxModule",
    "http": "modules.http:HttpModule",
    "manual": "modules.manual:ManualModule",
    "powerdns": "modules.powerdns:PowerDNSModule",
    "acme": "modules.acme:AcmeModule",
    "mariadb": "modules.mariadb:MariaDBModule",
    "postgresql": "modules.postgresql:PostgreSQLModule",
    "libvirt": "modules.libvirt:LibvirtModule",  # imports libvirt-python on first use
    "shellscripts": "modules.shellscripts:ShellScriptsModule",
    "provisor": "modules.provisor:ProvisorModule",
    "epp": "modules.epp:EppModule",
    "proxmox": "modules.proxmox:ProxmoxModule",
    "cpanel": "modules.cpanel:CpanelModule",
    "ispmanager": "modules.ispmanager:ISPmanagerModule",
}

_registry: dict[str, type[ModuleType]] = {}
_loaded = False
_lock = threading.Lock()


def register(cls):
    """Register a module type class (usable as a decorator).

    The class must declare its ``id`` and its ``operations`` (every kind it implements,
    each with its method): there is no "all of them" default.
    """
    if not cls.id:
        raise ValueError("a module type needs an id")
    cls.declared_operations()  # raises TypeError for a type that does not declare them
    _registry[cls.id] = cls
    return cls


def _load():
    global _loaded
    if _loaded:
        return
    with _lock:  # worker threads may ask for a type at the same moment
        if _loaded:
            return
        found = {ep.name: ep for ep in entry_points(group="provisor.modules")}
        for name, target in BUILTIN.items():
            if name not in found:  # running from a source tree that is not installed
                module_name, _, attr = target.partition(":")
                register(getattr(__import__(module_name, fromlist=[attr]), attr))
        for name, ep in found.items():
            try:
                register(ep.load())
            except Exception:
                log.exception("cannot load processing module type %r", name)
        _loaded = True


def types():
    """All known module types, by id."""
    _load()
    return dict(sorted(_registry.items()))


def get_type(type_id):
    _load()
    return _registry.get(type_id)
