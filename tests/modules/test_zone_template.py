"""The record template syntax of the powerdns module (modules/zone_template.py): what each
line becomes, and the message a wrong line gets (its number, its text, what is wrong)."""

import pytest

from modules.zone_template import TemplateError, parse, rrsets

VALUES = {"domain": "example.com", "ip": "192.0.2.7", "ipv6": "2001:DB8:0:0::7"}


def records(text, values=VALUES):
    return [(r.name, r.type, r.content, r.ttl) for r in parse(text, values)]


def error(text, values=VALUES):
    with pytest.raises(TemplateError) as caught:
        parse(text, values)
    return str(caught.value)


def test_each_type_and_name_form():
    text = """
# comments and blank lines are skipped
; so are these
@ A {ip}
@ AAAA {ipv6}
www 300 IN CNAME @
ftp CNAME www
*.dev CNAME dev.{domain}.
@ MX 10 mail.{domain}
@ MX 20 MX.Provider.NET
_dmarc TXT v=DMARC1; p=none
_sip._tcp SRV 10 5 5060 sip.example.net
@ CAA 0 issuewild "letsencrypt.org"
sub NS ns1.other.example
"""
    assert records(text) == [
        ("example.com.", "A", "192.0.2.7", None),
        ("example.com.", "AAAA", "2001:db8::7", None),
        ("www.example.com.", "CNAME", "example.com.", 300),
        ("ftp.example.com.", "CNAME", "www.example.com.", None),
        ("*.dev.example.com.", "CNAME", "dev.example.com.", None),
        ("example.com.", "MX", "10 mail.example.com.", None),
        ("example.com.", "MX", "20 mx.provider.net.", None),
        ("_dmarc.example.com.", "TXT", '"v=DMARC1; p=none"', None),
        ("_sip._tcp.example.com.", "SRV", "10 5 5060 sip.example.net.", None),
        ("example.com.", "CAA", '0 issuewild "letsencrypt.org"', None),
        ("sub.example.com.", "NS", "ns1.other.example.", None),
    ]


def test_rrsets_group_by_name_and_type_with_the_default_ttl():
    sets = rrsets(parse("@ MX 10 a.example.net\n@ MX 20 b.example.net\nwww 60 A {ip}", VALUES), 900)
    assert sets == [
        {
            "name": "example.com.",
            "type": "MX",
            "ttl": 900,
            "records": [
                {"content": "10 a.example.net.", "disabled": False},
                {"content": "20 b.example.net.", "disabled": False},
            ],
        },
        {
            "name": "www.example.com.",
            "type": "A",
            "ttl": 60,
            "records": [{"content": "192.0.2.7", "disabled": False}],
        },
    ]


def test_txt_is_quoted_escaped_and_split():
    (only,) = parse('@ TXT "a "quoted" \\ text"', VALUES)
    assert only.content == '"a \\"quoted\\" \\\\ text"'
    (long,) = parse("@ TXT " + "x" * 300, VALUES)
    assert long.content == '"' + "x" * 255 + '" "' + "x" * 45 + '"'


def test_repeated_lines_count_once():
    assert len(parse("@ A {ip}\n@ A 192.0.2.7", VALUES)) == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("www CNAM @", "Line 1 (www CNAM @): unknown record type CNAM; use one of A, AAAA"),
        ("@ A", "Line 1 (@ A): A needs data after the type"),
        ("justoneword", "expected <name> [<ttl>] <TYPE> <data>"),
        ("@ A 192.0.2.300", "'192.0.2.300' is not an IPv4 address"),
        ("@ AAAA 192.0.2.1", "'192.0.2.1' is not an IPv6 address"),
        ("@ CNAME www", "the zone itself (@) cannot have a CNAME"),
        ("@ NS ns1.example.net", "the zone's own NS records are the module's name servers"),
        ("www.example.com. A 192.0.2.1", "names are relative to the zone"),
        ("{domain} A 192.0.2.1", "placeholders go in the data only"),
        ("bad!name A 192.0.2.1", "labels are letters, digits, - and _"),
        ("a.*.b A 192.0.2.1", "a * only as the first"),
        ("@ MX mail.example.com", "expected <priority> <host>"),
        ("@ MX 70000 mail.example.com", "MX priority must be a whole number from 0 to 65535"),
        ("@ MX 10 bad_host!", "is not a host name"),
        ("www 0 A 192.0.2.1", "TTL 0 must be from 1 to"),
        ("@ TXT {password}", "unknown placeholder {password}; known: {domain}, {ip}, {ipv6}"),
        ("@ TXT {", "a { or } that is not a placeholder"),
        ("@ TXT caf\u00e9", "TXT text must be printable ASCII"),
        ('@ CAA 0 issue "a"b"', "a CAA value cannot contain quotes"),
        ("@ CAA 0 is-sue x", "CAA tag 'is-sue'"),
        ("_sip._tcp SRV 10 5 sip.example.net", "expected <priority> <weight> <port> <host>"),
        ("line one is fine A 192.0.2.1", "unknown record type ONE"),
    ],
)
def test_a_wrong_line_says_what_is_wrong(text, message):
    assert message in error(text)


def test_sets_that_cannot_be():
    assert "www has a CNAME and A: a CNAME must stand alone" in error(
        "www CNAME @\nwww A 192.0.2.1"
    )
    assert "www has 2 CNAMEs" in error("www CNAME @\nwww CNAME other.example.net")
    assert "www A has TTLs 60 and 120" in error("www 60 A 192.0.2.1\nwww 120 A 192.0.2.2")


def test_an_empty_placeholder_value_is_named():
    message = error("@ A {ip}\n@ AAAA {ipv6}", {**VALUES, "ipv6": ""})
    assert message.startswith("Line 2 (@ AAAA {ipv6}): uses {ipv6}, but the IPv6 address")


def test_an_empty_template_has_no_records():
    assert parse("", VALUES) == [] and parse("# nothing\n\n", VALUES) == []
