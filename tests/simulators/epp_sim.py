"""A simulated EPP registry for the tests: a strict server of the published protocol, not
a real registry.

Built from the IETF's published specifications (no registry's files or documentation):

- RFC 5730, "Extensible Provisioning Protocol (EPP)": the greeting, ``<hello>``,
  ``<login>`` / ``<logout>``, the command / response shapes, the result codes (section 3);
- RFC 5731, "EPP Domain Name Mapping": ``domain:check/info/create/renew/update/delete``;
- RFC 5732, "EPP Host Mapping": ``host:check/info/create``;
- RFC 5733, "EPP Contact Mapping": ``contact:check/info/create``;
- RFC 5734, "EPP Transport over TCP": TLS, each data unit preceded by a 4-byte
  big-endian length that counts itself, the greeting sent on connect.

Strictness: every frame a client sends is validated with lxml against the RFCs' XML
schemas (``epp_schemas/``, transcribed from the RFC text with the IETF licence): what does
not parse or does not validate is answered ``2001`` (command syntax error) with the
validator's reason; commands before ``<login>`` are ``2002``; a wrong clID / password is
``2200``; an object URI this server does not serve is ``2307``, an extension URI ``2103``;
another registrar's objects are ``2201`` (authorization error) for info, update, renew and
delete; ``2302`` / ``2303`` / ``2304`` / ``2306`` where RFC 5731 says. Every answer it sends
is validated too (a simulator bug fails loudly instead of teaching the module a wrong
shape).

State (one registry per instance): contacts, hosts and domains with their sponsoring
client, statuses, creation / expiry dates and auth codes.

Faults the tests flip (attributes): ``slow`` (seconds to wait before each answer),
``error`` (a result code every command after login is answered with, in the documented
form; 2500-2502 also close the connection), ``garbage`` (answers bytes that are not
XML), ``drop_after_create`` (commits the next ``domain:create`` and closes the connection
without answering), ``pending`` (``domain:create`` answers 1001 and the domain stays
``pendingCreate`` for ``pending_infos`` info commands). Down: :meth:`stop`, or a port
nobody listens on.

Assumptions where the RFCs leave the registry free: periods are in years (1-10), a
domain's name servers are host objects (``domain:hostObj``) that must exist, a host under
a TLD this registry serves needs an address (glue), ``domain:delete`` takes effect at once
(no redemption period), ``domain:info`` by a non-sponsor without the auth code is
``2201``.
"""

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import struct
import threading
import time

from lxml import etree

log = logging.getLogger(__name__)

SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "epp_schemas")
EPP = "urn:ietf:params:xml:ns:epp-1.0"
DOMAIN = "urn:ietf:params:xml:ns:domain-1.0"
CONTACT = "urn:ietf:params:xml:ns:contact-1.0"
HOST = "urn:ietf:params:xml:ns:host-1.0"
OBJECTS = (DOMAIN, CONTACT, HOST)
MAX_FRAME = 1 << 20

# RFC 5730 section 3: the texts of the result codes this server answers with
MESSAGES = {
    1000: "Command completed successfully",
    1001: "Command completed successfully; action pending",
    1300: "Command completed successfully; no messages",
    1500: "Command completed successfully; ending session",
    2001: "Command syntax error",
    2002: "Command use error",
    2003: "Required parameter missing",
    2004: "Parameter value range error",
    2005: "Parameter value syntax error",
    2101: "Unimplemented command",
    2103: "Unimplemented extension",
    2200: "Authentication error",
    2201: "Authorization error",
    2202: "Invalid authorization information",
    2302: "Object exists",
    2303: "Object does not exist",
    2304: "Object status prohibits operation",
    2305: "Object association prohibits operation",
    2306: "Parameter value policy error",
    2307: "Unimplemented object service",
    2400: "Command failed",
    2500: "Command failed; server closing connection",
    2501: "Authentication error; server closing connection",
    2502: "Session limit exceeded; server closing connection",
}


def _schema():
    imports = "".join(
        f'<import namespace="{ns}" schemaLocation="{os.path.join(SCHEMAS, name)}"/>'
        for ns, name in (
            (EPP, "epp-1.0.xsd"),
            (DOMAIN, "domain-1.0.xsd"),
            (CONTACT, "contact-1.0.xsd"),
            (HOST, "host-1.0.xsd"),
        )
    )
    wrapper = (
        '<schema xmlns="http://www.w3.org/2001/XMLSchema" '
        f'targetNamespace="urn:provisor:tests:epp-all">{imports}</schema>'
    )
    return etree.XMLSchema(etree.fromstring(wrapper.encode()))


SCHEMA = _schema()


def self_signed(folder, name="localhost"):
    """A self-signed certificate and key for 127.0.0.1 in ``folder``: (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_path, key_path = os.path.join(folder, f"{name}.crt"), os.path.join(folder, f"{name}.key")
    with open(cert_path, "wb") as fh:
        fh.write(cert_pem)
    with open(key_path, "wb") as fh:
        fh.write(key_pem)
    return cert_path, key_path, cert_pem.decode(), key_pem.decode()


def _date(value):
    return value.strftime("%Y-%m-%dT%H:%M:%S.0Z")


def _add_years(value, years):
    try:
        return value.replace(year=value.year + years)
    except ValueError:  # 29 February
        return value.replace(year=value.year + years, day=28)


class EppError(Exception):
    def __init__(self, code, reason=None, close=False):
        super().__init__(reason or MESSAGES[code])
        self.code = code
        self.reason = reason
        self.close = close


class _Drop(Exception):
    """Close the connection without answering."""


def q(ns, tag):
    return f"{{{ns}}}{tag}"


class EppSimulator:
    """A registry speaking EPP over TLS on 127.0.0.1 (see the module docstring)."""

    def __init__(self, folder, registrars=None, tlds=("com", "net", "org", "test", "example.com")):
        self.folder = folder
        # clID -> password (RFC 5730 pwType: 6-16 characters)
        self.registrars = dict(registrars or {"provisor-reg": "s3cret-pw-" + secrets.token_hex(3)})
        self.tlds = {t.lower() for t in tlds}
        self.cert, self.key, self.cert_pem, _ = self_signed(folder)
        self.lock = threading.RLock()
        self.contacts, self.hosts, self.domains = {}, {}, {}
        self.frames = []  # (clID or None, the command's local name, object or None)
        self.client_certs = []  # the client certificates presented (DER), if any
        self.logins = 0
        self.slow = 0.0
        self.error = None
        self.garbage = False
        self.drop_after_create = False
        self.pending = False
        self.pending_infos = 2
        self._roid = 0
        self._sock = None
        self._threads = []
        self._stopping = threading.Event()
        self.port = None

    # --- running ------------------------------------------------------------------------

    def start(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        context.verify_mode = ssl.CERT_OPTIONAL  # a client certificate is recorded if sent
        context.load_verify_locations(cadata=self.cert_pem)
        self.context = context
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        thread = threading.Thread(target=self._accept, name="epp-sim", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self):
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def trust_client_cert(self, cert_pem):
        """Accept client certificates signed by ``cert_pem`` (a self-signed one)."""
        self.context.load_verify_locations(cadata=cert_pem)

    def _accept(self):
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()

    def _serve(self, raw):
        try:
            raw.settimeout(30)
            conn = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        session = {"clID": None}
        try:
            peer = conn.getpeercert(binary_form=True)
            if peer:
                self.client_certs.append(peer)
            self._send(conn, self._greeting())
            while not self._stopping.is_set():
                data = self._read(conn)
                if data is None:
                    return
                try:
                    answer, close = self._handle(session, data)
                except _Drop:
                    return
                if self.slow:
                    time.sleep(self.slow)
                if self.garbage and session["clID"]:
                    self._send(conn, b"\x00\xffthis is not EPP\n<<<")
                    continue
                self._send(conn, answer)
                if close:
                    return
        except (OSError, ssl.SSLError, ConnectionError):
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    @staticmethod
    def _read(conn):
        header = b""
        while len(header) < 4:
            chunk = conn.recv(4 - len(header))
            if not chunk:
                return None
            header += chunk
        (length,) = struct.unpack(">I", header)
        if length < 5 or length > MAX_FRAME:
            return None
        data = b""
        while len(data) < length - 4:
            chunk = conn.recv(min(65536, length - 4 - len(data)))
            if not chunk:
                return None
            data += chunk
        return data

    @staticmethod
    def _send(conn, data):
        conn.sendall(struct.pack(">I", len(data) + 4) + data)

    # --- answers ------------------------------------------------------------------------

    def _xml(self, root):
        if not SCHEMA.validate(root):
            raise AssertionError(f"the simulator answered invalid EPP: {SCHEMA.error_log}")
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=False)

    def _greeting(self):
        epp = etree.Element(q(EPP, "epp"), nsmap={None: EPP})
        g = etree.SubElement(epp, q(EPP, "greeting"))
        etree.SubElement(g, q(EPP, "svID")).text = "Provisor test registry (simulated)"
        etree.SubElement(g, q(EPP, "svDate")).text = _date(dt.datetime.now(dt.UTC))
        menu = etree.SubElement(g, q(EPP, "svcMenu"))
        etree.SubElement(menu, q(EPP, "version")).text = "1.0"
        etree.SubElement(menu, q(EPP, "lang")).text = "en"
        for ns in OBJECTS:
            etree.SubElement(menu, q(EPP, "objURI")).text = ns
        dcp = etree.SubElement(g, q(EPP, "dcp"))
        access = etree.SubElement(dcp, q(EPP, "access"))
        etree.SubElement(access, q(EPP, "all"))
        statement = etree.SubElement(dcp, q(EPP, "statement"))
        purpose = etree.SubElement(statement, q(EPP, "purpose"))
        etree.SubElement(purpose, q(EPP, "prov"))
        recipient = etree.SubElement(statement, q(EPP, "recipient"))
        etree.SubElement(recipient, q(EPP, "ours"))
        retention = etree.SubElement(statement, q(EPP, "retention"))
        etree.SubElement(retention, q(EPP, "stated"))
        return self._xml(epp)

    def _response(self, code, cl_trid=None, res_data=None, reason=None):
        epp = etree.Element(q(EPP, "epp"), nsmap={None: EPP})
        r = etree.SubElement(epp, q(EPP, "response"))
        result = etree.SubElement(r, q(EPP, "result"), code=str(code))
        etree.SubElement(result, q(EPP, "msg")).text = MESSAGES[code]
        if reason:
            ext = etree.SubElement(result, q(EPP, "extValue"))
            value = etree.SubElement(ext, q(EPP, "value"))
            etree.SubElement(value, q(EPP, "undef"))
            etree.SubElement(ext, q(EPP, "reason")).text = reason[:500]
        if res_data is not None:
            etree.SubElement(r, q(EPP, "resData")).append(res_data)
        tr = etree.SubElement(r, q(EPP, "trID"))
        if cl_trid:
            etree.SubElement(tr, q(EPP, "clTRID")).text = cl_trid
        etree.SubElement(tr, q(EPP, "svTRID")).text = "SIM-" + secrets.token_hex(6)
        return self._xml(epp)

    # --- commands -----------------------------------------------------------------------

    def _handle(self, session, data):
        try:
            root = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False))
        except etree.XMLSyntaxError as exc:
            return self._response(2001, reason=f"not well-formed XML: {exc}"), False
        if not SCHEMA.validate(root):
            error = SCHEMA.error_log.last_error
            return self._response(2001, reason=f"schema: {error.message}"), False
        child = root[0]
        if child.tag == q(EPP, "hello"):
            return self._greeting(), False
        if child.tag != q(EPP, "command"):
            return self._response(2001, reason="a client sends <hello> or <command>"), False
        command = child[0]
        cl_trid = child.findtext(q(EPP, "clTRID"))
        name = etree.QName(command).localname
        try:
            if name == "login":
                return self._login(session, command, cl_trid), False
            if session["clID"] is None:
                raise EppError(2002, "log in first")
            if name == "logout":
                return self._response(1500, cl_trid), True
            if self.error:
                raise EppError(self.error, close=self.error >= 2500)
            if name == "poll":
                return self._response(1300, cl_trid), False
            obj = command[0] if len(command) else None
            if obj is None or etree.QName(obj).namespace not in OBJECTS:
                raise EppError(2101, f"<{name}> is not implemented here")
            kind = etree.QName(obj).namespace.split(":")[-1].split("-")[0]
            if etree.QName(obj).namespace not in session["objects"]:
                raise EppError(2307, f"{kind} was not among the login's objURIs")
            with self.lock:
                self.frames.append((session["clID"], name, kind))
                handler = getattr(self, f"_{kind}_{name}", None)
                if handler is None:
                    raise EppError(2101, f"{kind}:{name} is not implemented by this registry")
                code, res = handler(session["clID"], obj)
            return self._response(code, cl_trid, res), False
        except EppError as exc:
            return self._response(exc.code, cl_trid, reason=exc.reason), exc.close

    def _login(self, session, login, cl_trid):
        if session["clID"] is not None:
            raise EppError(2002, "already logged in")
        cl_id = login.findtext(q(EPP, "clID"))
        pw = login.findtext(q(EPP, "pw"))
        if self.registrars.get(cl_id) != pw:
            session["failures"] = session.get("failures", 0) + 1
            raise EppError(
                2200 if session["failures"] < 3 else 2501, close=session["failures"] >= 3
            )
        svcs = login.find(q(EPP, "svcs"))
        uris = [e.text for e in svcs.findall(q(EPP, "objURI"))]
        for uri in uris:
            if uri not in OBJECTS:
                raise EppError(2307, f"object service {uri} is not offered here")
        for ext in svcs.iter(q(EPP, "extURI")):
            raise EppError(2103, f"extension {ext.text} is not offered here")
        session["clID"], session["objects"] = cl_id, set(uris)
        self.logins += 1
        return self._response(1000, cl_trid)

    def _new_roid(self, suffix):
        self._roid += 1
        return f"{self._roid}-{suffix}"

    @staticmethod
    def _res(ns, prefix, tag):
        return etree.Element(q(ns, tag), nsmap={prefix: ns})

    # contacts (RFC 5733)

    def _contact_check(self, cl_id, obj):
        res = self._res(CONTACT, "contact", "chkData")
        for ident in obj.findall(q(CONTACT, "id")):
            cd = etree.SubElement(res, q(CONTACT, "cd"))
            taken = ident.text in self.contacts
            etree.SubElement(cd, q(CONTACT, "id"), avail="0" if taken else "1").text = ident.text
            if taken:
                etree.SubElement(cd, q(CONTACT, "reason")).text = "In use"
        return 1000, res

    def _contact_create(self, cl_id, obj):
        ident = obj.findtext(q(CONTACT, "id"))
        if ident in self.contacts:
            raise EppError(2302, f"contact {ident} exists")
        postal = obj.find(q(CONTACT, "postalInfo"))
        addr = postal.find(q(CONTACT, "addr"))
        cc = addr.findtext(q(CONTACT, "cc"))
        if not cc.isalpha() or not cc.isupper():
            raise EppError(2005, f"{cc!r} is not an ISO 3166 country code")
        now = dt.datetime.now(dt.UTC)
        self.contacts[ident] = {
            "id": ident,
            "roid": self._new_roid("SIMC"),
            "clID": cl_id,
            "name": postal.findtext(q(CONTACT, "name")),
            "org": postal.findtext(q(CONTACT, "org")),
            "street": [s.text for s in addr.findall(q(CONTACT, "street"))],
            "city": addr.findtext(q(CONTACT, "city")),
            "cc": cc,
            "voice": obj.findtext(q(CONTACT, "voice")),
            "email": obj.findtext(q(CONTACT, "email")),
            "pw": obj.find(q(CONTACT, "authInfo")).findtext(q(CONTACT, "pw")),
            "crDate": now,
        }
        res = self._res(CONTACT, "contact", "creData")
        etree.SubElement(res, q(CONTACT, "id")).text = ident
        etree.SubElement(res, q(CONTACT, "crDate")).text = _date(now)
        return 1000, res

    def _contact_info(self, cl_id, obj):
        ident = obj.findtext(q(CONTACT, "id"))
        c = self.contacts.get(ident)
        if c is None:
            raise EppError(2303, f"no contact {ident}")
        given = obj.find(q(CONTACT, "authInfo"))
        if c["clID"] != cl_id and (given is None or given.findtext(q(CONTACT, "pw")) != c["pw"]):
            raise EppError(2201, f"contact {ident} is sponsored by another registrar")
        res = self._res(CONTACT, "contact", "infData")
        etree.SubElement(res, q(CONTACT, "id")).text = ident
        etree.SubElement(res, q(CONTACT, "roid")).text = c["roid"]
        etree.SubElement(res, q(CONTACT, "status"), s="ok")
        postal = etree.SubElement(res, q(CONTACT, "postalInfo"), type="int")
        etree.SubElement(postal, q(CONTACT, "name")).text = c["name"]
        if c["org"]:
            etree.SubElement(postal, q(CONTACT, "org")).text = c["org"]
        addr = etree.SubElement(postal, q(CONTACT, "addr"))
        for line in c["street"]:
            etree.SubElement(addr, q(CONTACT, "street")).text = line
        etree.SubElement(addr, q(CONTACT, "city")).text = c["city"]
        etree.SubElement(addr, q(CONTACT, "cc")).text = c["cc"]
        if c["voice"]:
            etree.SubElement(res, q(CONTACT, "voice")).text = c["voice"]
        etree.SubElement(res, q(CONTACT, "email")).text = c["email"]
        etree.SubElement(res, q(CONTACT, "clID")).text = c["clID"]
        etree.SubElement(res, q(CONTACT, "crID")).text = c["clID"]
        etree.SubElement(res, q(CONTACT, "crDate")).text = _date(c["crDate"])
        return 1000, res

    # hosts (RFC 5732)

    def _served(self, name):
        """Whether ``name`` is under one of the registry's zones (TLDs or suffixes)."""
        return any(name.endswith("." + t) for t in self.tlds)

    def _registrable(self, name):
        """Whether ``name`` is one label under one of the registry's zones."""
        return any(name.endswith("." + t) and "." not in name[: -len(t) - 1] for t in self.tlds)

    def _host_check(self, cl_id, obj):
        res = self._res(HOST, "host", "chkData")
        for n in obj.findall(q(HOST, "name")):
            cd = etree.SubElement(res, q(HOST, "cd"))
            taken = n.text.lower() in self.hosts
            etree.SubElement(cd, q(HOST, "name"), avail="0" if taken else "1").text = n.text
            if taken:
                etree.SubElement(cd, q(HOST, "reason")).text = "In use"
        return 1000, res

    def _host_create(self, cl_id, obj):
        name = obj.findtext(q(HOST, "name")).lower()
        if name in self.hosts:
            raise EppError(2302, f"host {name} exists")
        addrs = [a.text for a in obj.findall(q(HOST, "addr"))]
        if self._served(name) and not addrs:
            raise EppError(2003, f"{name} is under a TLD of this registry: it needs an address")
        if not self._served(name) and addrs:
            raise EppError(2306, f"{name} is not under a TLD of this registry: no addresses")
        now = dt.datetime.now(dt.UTC)
        self.hosts[name] = {"clID": cl_id, "addrs": addrs, "crDate": now}
        res = self._res(HOST, "host", "creData")
        etree.SubElement(res, q(HOST, "name")).text = name
        etree.SubElement(res, q(HOST, "crDate")).text = _date(now)
        return 1000, res

    def _host_info(self, cl_id, obj):
        name = obj.findtext(q(HOST, "name")).lower()
        h = self.hosts.get(name)
        if h is None:
            raise EppError(2303, f"no host {name}")
        res = self._res(HOST, "host", "infData")
        etree.SubElement(res, q(HOST, "name")).text = name
        etree.SubElement(res, q(HOST, "roid")).text = f"H{abs(hash(name)) % 10**8}-SIM"
        etree.SubElement(res, q(HOST, "status"), s="ok")
        etree.SubElement(res, q(HOST, "clID")).text = h["clID"]
        return 1000, res

    # domains (RFC 5731)

    def _domain_check(self, cl_id, obj):
        res = self._res(DOMAIN, "domain", "chkData")
        for n in obj.findall(q(DOMAIN, "name")):
            name = n.text.lower()
            cd = etree.SubElement(res, q(DOMAIN, "cd"))
            reason = None
            if not self._registrable(name):
                reason = "Not offered by this registry"
            elif name in self.domains:
                reason = "In use"
            etree.SubElement(cd, q(DOMAIN, "name"), avail="0" if reason else "1").text = n.text
            if reason:
                etree.SubElement(cd, q(DOMAIN, "reason")).text = reason
        return 1000, res

    def _sponsored(self, cl_id, name):
        d = self.domains.get(name)
        if d is None:
            raise EppError(2303, f"no domain {name}")
        if d["clID"] != cl_id:
            raise EppError(2201, f"{name} is sponsored by another registrar")
        return d

    def _domain_create(self, cl_id, obj):
        name = obj.findtext(q(DOMAIN, "name")).lower()
        if not self._registrable(name):
            raise EppError(
                2306,
                f"{name}: this registry offers second-level names under "
                f"{', '.join(sorted(self.tlds))}",
            )
        if name in self.domains:
            raise EppError(2302, f"{name} is registered already")
        years = self._years(obj.find(q(DOMAIN, "period")))
        registrant = obj.findtext(q(DOMAIN, "registrant"))
        if not registrant:
            raise EppError(2003, "this registry requires a registrant")
        contacts = {}
        for role in obj.findall(q(DOMAIN, "contact")):
            contacts.setdefault(role.get("type"), []).append(role.text)
        for ident in [registrant, *[i for ids in contacts.values() for i in ids]]:
            if ident not in self.contacts:
                raise EppError(2303, f"no contact {ident}")
            if self.contacts[ident]["clID"] != cl_id:
                raise EppError(2201, f"contact {ident} is sponsored by another registrar")
        ns = []
        found = obj.find(q(DOMAIN, "ns"))
        if found is not None:
            if found.find(q(DOMAIN, "hostAttr")) is not None:
                raise EppError(2306, "this registry takes name servers as host objects")
            ns = [h.text.lower() for h in found.findall(q(DOMAIN, "hostObj"))]
            for host in ns:
                if host not in self.hosts:
                    raise EppError(2303, f"no host object {host}: create it first")
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.domains[name] = {
            "name": name,
            "roid": self._new_roid("SIMD"),
            "clID": cl_id,
            "registrant": registrant,
            "contacts": contacts,
            "ns": ns,
            "status": {"pendingCreate"} if self.pending else set(),
            "pending_infos": self.pending_infos if self.pending else 0,
            "crDate": now,
            "exDate": _add_years(now, years),
            "pw": obj.find(q(DOMAIN, "authInfo")).findtext(q(DOMAIN, "pw")),
        }
        if self.drop_after_create:
            self.drop_after_create = False
            raise _Drop()
        res = self._res(DOMAIN, "domain", "creData")
        etree.SubElement(res, q(DOMAIN, "name")).text = name
        etree.SubElement(res, q(DOMAIN, "crDate")).text = _date(now)
        etree.SubElement(res, q(DOMAIN, "exDate")).text = _date(self.domains[name]["exDate"])
        return (1001 if self.pending else 1000), res

    @staticmethod
    def _years(period):
        if period is None:
            return 1
        value = int(period.text)
        if period.get("unit") != "y" or value > 10:
            raise EppError(2004, "periods are 1 to 10 years here")
        return value

    def _domain_info(self, cl_id, obj):
        el = obj.find(q(DOMAIN, "name"))
        name = el.text.lower()
        d = self.domains.get(name)
        if d is None:
            raise EppError(2303, f"no domain {name}")
        given = obj.find(q(DOMAIN, "authInfo"))
        if d["clID"] != cl_id and (given is None or given.findtext(q(DOMAIN, "pw")) != d["pw"]):
            raise EppError(2201, f"{name} is sponsored by another registrar")
        if "pendingCreate" in d["status"]:
            d["pending_infos"] -= 1
            if d["pending_infos"] <= 0:
                d["status"].discard("pendingCreate")
        res = self._res(DOMAIN, "domain", "infData")
        etree.SubElement(res, q(DOMAIN, "name")).text = name
        etree.SubElement(res, q(DOMAIN, "roid")).text = d["roid"]
        for s in sorted(d["status"]) or ["ok"]:
            etree.SubElement(res, q(DOMAIN, "status"), s=s)
        etree.SubElement(res, q(DOMAIN, "registrant")).text = d["registrant"]
        for role, ids in sorted(d["contacts"].items()):
            for ident in ids:
                etree.SubElement(res, q(DOMAIN, "contact"), type=role).text = ident
        if d["ns"]:
            ns = etree.SubElement(res, q(DOMAIN, "ns"))
            for host in d["ns"]:
                etree.SubElement(ns, q(DOMAIN, "hostObj")).text = host
        etree.SubElement(res, q(DOMAIN, "clID")).text = d["clID"]
        etree.SubElement(res, q(DOMAIN, "crID")).text = d["clID"]
        etree.SubElement(res, q(DOMAIN, "crDate")).text = _date(d["crDate"])
        etree.SubElement(res, q(DOMAIN, "exDate")).text = _date(d["exDate"])
        if d["clID"] == cl_id:
            auth = etree.SubElement(res, q(DOMAIN, "authInfo"))
            etree.SubElement(auth, q(DOMAIN, "pw")).text = d["pw"]
        return 1000, res

    def _domain_renew(self, cl_id, obj):
        name = obj.findtext(q(DOMAIN, "name")).lower()
        d = self._sponsored(cl_id, name)
        if d["status"] & {"pendingCreate", "pendingDelete", "clientRenewProhibited"}:
            raise EppError(2304, f"{name} has status {', '.join(sorted(d['status']))}")
        current = obj.findtext(q(DOMAIN, "curExpDate"))
        if current != d["exDate"].date().isoformat():
            raise EppError(2004, f"curExpDate {current} is not the expiry date of {name}")
        years = self._years(obj.find(q(DOMAIN, "period")))
        if _add_years(d["exDate"], years) > _add_years(dt.datetime.now(dt.UTC), 10):
            raise EppError(2004, "a domain is registered for ten years at most")
        d["exDate"] = _add_years(d["exDate"], years)
        res = self._res(DOMAIN, "domain", "renData")
        etree.SubElement(res, q(DOMAIN, "name")).text = name
        etree.SubElement(res, q(DOMAIN, "exDate")).text = _date(d["exDate"])
        return 1000, res

    def _domain_update(self, cl_id, obj):
        name = obj.findtext(q(DOMAIN, "name")).lower()
        d = self._sponsored(cl_id, name)
        if d["status"] & {"pendingCreate", "pendingDelete"}:
            raise EppError(2304, f"{name} has status {', '.join(sorted(d['status']))}")
        add = [s.get("s") for s in obj.findall(f"{q(DOMAIN, 'add')}/{q(DOMAIN, 'status')}")]
        rem = [s.get("s") for s in obj.findall(f"{q(DOMAIN, 'rem')}/{q(DOMAIN, 'status')}")]
        for s in add + rem:
            if not s.startswith("client"):
                raise EppError(2306, f"a registrar may set client statuses only, not {s}")
        for s in add:
            if s in d["status"]:  # RFC 5731 3.2.5: adding a status it has is an error
                raise EppError(2306, f"{name} has status {s} already")
        for s in rem:
            if s not in d["status"]:
                raise EppError(2306, f"{name} does not have status {s}")
        chg = obj.find(q(DOMAIN, "chg"))
        if chg is not None and chg.find(q(DOMAIN, "authInfo")) is not None:
            d["pw"] = chg.find(q(DOMAIN, "authInfo")).findtext(q(DOMAIN, "pw"))
        d["status"] = (d["status"] | set(add)) - set(rem)
        return 1000, None

    def _domain_delete(self, cl_id, obj):
        name = obj.findtext(q(DOMAIN, "name")).lower()
        d = self._sponsored(cl_id, name)
        if d["status"] & {"clientDeleteProhibited", "pendingDelete"}:
            raise EppError(2304, f"{name} has status {', '.join(sorted(d['status']))}")
        del self.domains[name]
        return 1000, None

    # --- for the tests ------------------------------------------------------------------

    def commands(self, name=None, kind=None):
        """The commands received after login: ``[(clID, command, object)]``."""
        return [
            f
            for f in self.frames
            if (name is None or f[1] == name) and (kind is None or f[2] == kind)
        ]

    def register_for(self, cl_id, name, registrant="other-1"):
        """A domain sponsored by another registrar (with its own contact)."""
        with self.lock:
            now = dt.datetime.now(dt.UTC).replace(microsecond=0)
            self.contacts.setdefault(
                registrant,
                {
                    "id": registrant,
                    "roid": self._new_roid("SIMC"),
                    "clID": cl_id,
                    "name": "X",
                    "org": None,
                    "street": [],
                    "city": "Oslo",
                    "cc": "NO",
                    "voice": None,
                    "email": "x@example.net",
                    "pw": "other-pw-1",
                    "crDate": now,
                },
            )
            self.domains[name] = {
                "name": name,
                "roid": self._new_roid("SIMD"),
                "clID": cl_id,
                "registrant": registrant,
                "contacts": {},
                "ns": [],
                "status": set(),
                "pending_infos": 0,
                "crDate": now,
                "exDate": _add_years(now, 1),
                "pw": "other-auth-code",
            }
