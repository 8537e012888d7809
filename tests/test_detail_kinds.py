"""Detail fields have kinds (ip, url, domain, hostname, port, text with a length): a value
that is not of its kind is refused wherever details are written — a task closed on the
staff pages or through the API, fields filled in, a module's result — with the field's
message, and nothing changes. The product type form reads and writes the kinds, and
lines without one (as they were before kinds) still parse."""

import pytest

from app.models import Operation, ProductType, Service, Task
from app.services import catalog, detail_fields
from app.services.errors import ValidationError
from tests.support import db, html

VPS_FIELDS = {
    "hostname": "vps1.example.net",
    "ip": "203.0.113.8",
    "username": "root",
    "password": "by-hand",
}


@pytest.mark.parametrize(
    "kind, raw, message",
    [
        ("ip", "999.999.1.1", "Not an IP address."),
        ("ip", "203.0.113.8; rm -rf /", "Not an IP address."),
        ("url", "javascript:alert(3)", "Not a web address (http:// or https://)."),
        ("url", "ftp://files.example.com/", "Not a web address (http:// or https://)."),
        ("url", "https://", "Not a web address (http:// or https://)."),
        ("domain", "a" * 20000, "At most 253 characters."),
        ("domain", "localhost", "Not a domain name (such as example.com)."),
        ("hostname", "bad host", "Not a host name"),
        ("port", "0", "Not a port (a number from 1 to 65535)."),
        ("port", "65536", "Not a port (a number from 1 to 65535)."),
        ("port", "22a", "Not a port (a number from 1 to 65535)."),
        ("text", "x" * 201, "At most 200 characters."),
        ("text", "two\nlines", "Must be one line of text."),
    ],
)
def test_a_value_not_of_its_kind_is_refused_with_the_fields_message(kind, raw, message):
    with pytest.raises(ValueError) as caught:
        detail_fields.clean_value({"name": "f", "kind": kind}, raw)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "spec, raw, cleaned",
    [
        ({"kind": "ip"}, " 203.0.113.8 ", "203.0.113.8"),
        ({"kind": "ip"}, "2001:DB8:0:0::1", "2001:db8::1"),
        ({"kind": "url"}, "https://panel.example.com:8443/login", None),
        ({"kind": "url"}, "http://[2001:db8::1]/", None),
        ({"kind": "domain"}, "Bücher.Example", "xn--bcher-kva.example"),
        ({"kind": "hostname"}, "DB1.example.net", "db1.example.net"),
        ({"kind": "hostname"}, "127.0.0.1", "127.0.0.1"),
        ({"kind": "port"}, 3306, "3306"),
        ({"kind": "text", "max_length": 500}, "y" * 500, None),
        ({}, "a field without a kind is text", None),
    ],
)
def test_good_values_pass_cleaned(spec, raw, cleaned):
    value = detail_fields.clean_value({"name": "f", **spec}, raw)
    assert value == (cleaned if cleaned is not None else str(raw).strip())


def test_form_lines_with_and_without_a_kind():
    text = (
        "ip | IP address | ip | required\n"
        "panel_url | Control panel | url\n"
        "password | Root password | required | secret\n"
        "notes | Notes | text:1000\n"
        "port | Port | PORT | Required"
    )
    fields, problems = detail_fields.parse(text)
    assert problems == []
    assert [(f["name"], f["kind"], f["required"], f["secret"]) for f in fields] == [
        ("ip", "ip", True, False),
        ("panel_url", "url", False, False),
        ("password", "text", True, True),
        ("notes", "text", False, False),
        ("port", "port", True, False),
    ]
    assert fields[3]["max_length"] == 1000
    again, _ = detail_fields.parse(detail_fields.format_lines(fields))
    assert again == fields
    assert detail_fields.format_lines(fields).splitlines()[0] == "ip | IP address | ip | required"

    _, problems = detail_fields.parse("ip | IP | ipv7\nport | Port | port:5\nx | X | ip | url")
    assert problems == [
        "line 1: 'ipv7': a kind (text, ip, url, domain, hostname, port) or a flag (required, "
        "secret) was expected",
        "line 2: only text takes a length (text:5)",
        "line 3: one kind per field",
    ]


def test_the_product_type_form_shows_and_edits_the_kinds(app, client, admin):
    with db(app):
        vps = ProductType.get(ProductType.code == "vps")
    page = html(client.get(f"/catalog/product-types/{vps.id}/edit"))
    assert "ip | IP address | ip | required" in page
    assert "password | Root password | text | required | secret" in page
    form = {
        "name": "Virtual private server",
        "detail_fields": "ip | IP address | ipv7 | required",
        "order_fields": "hostname | Hostname | hostname | required",
        "welcome_subject": "Ready",
        "welcome_template": "Hello",
    }
    response = client.post(f"/catalog/product-types/{vps.id}/edit", data=form)
    assert response.status_code == 422
    assert "&#39;ipv7&#39;: a kind" in html(response)
    form["detail_fields"] = "ip | IP address | ip | required\nssh_port | SSH port | port"
    response = client.post(f"/catalog/product-types/{vps.id}/edit", data=form)
    assert response.status_code == 302, html(response)[:2000]
    with db(app):
        assert ProductType.get_by_id(vps.id).detail_fields == [
            {"name": "ip", "label": "IP address", "kind": "ip", "required": True, "secret": False},
            {
                "name": "ssh_port",
                "label": "SSH port",
                "kind": "port",
                "required": False,
                "secret": False,
            },
        ]


def test_fields_as_a_list_need_known_kinds(app):
    with db(app):
        vps = ProductType.get(ProductType.code == "vps")
        data = {
            "name": "VPS",
            "detail_fields": [{"name": "ip", "kind": "ipv9"}],
            "welcome_subject": "s",
            "welcome_template": "t",
        }
        with pytest.raises(ValidationError) as caught:
            catalog.update_product_type(vps.id, data)
        assert "kind must be one of" in caught.value.fields["detail_fields"]


@pytest.fixture
def escalated(app, api):
    """A VPS whose open operation escalated to a task (the sandbox fails for good)."""
    department, module, tariff, customer = api.catalog(
        "sandbox", {"fail_first": 9, "permanent_failures": True}, product_type="vps"
    )
    order = api.order(customer["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"], ("manual",))
    with db(app):
        task = Task.get(Task.operation == op["id"])
    return {"task_id": task.id, "service_id": order["service_id"], "op_id": op["id"]}


def _state(app, escalated):
    with db(app):
        task = Task.get_by_id(escalated["task_id"])
        service = Service.get_by_id(escalated["service_id"])
        return task.status, service.status, service.details


def test_closing_a_task_on_the_staff_page_refuses_a_bad_ip(app, client, admin, escalated):
    task_id = escalated["task_id"]
    form = {f"field.{k}": v for k, v in VPS_FIELDS.items()}
    response = client.post(f"/tasks/{task_id}/close", data={**form, "field.ip": "999.999.1.1"})
    assert response.status_code == 422
    page = html(response)
    assert 'id="err-field-ip"' in page and "Not an IP address." in page
    assert 'value="999.999.1.1"' in page  # what was typed is kept
    assert _state(app, escalated) == ("new", "processing", {})

    response = client.post(f"/tasks/{task_id}/close", data=form)
    assert response.status_code == 302
    assert _state(app, escalated) == ("closed", "active", VPS_FIELDS)


def test_closing_a_task_through_the_api_refuses_bad_values(app, api, escalated):
    task_id = escalated["task_id"]
    bad = {**VPS_FIELDS, "hostname": "not a host", "panel_url": "javascript:alert(3)"}
    status, body = api.post(f"/tasks/{task_id}/close", {"fields": bad})
    assert status == 422, body
    assert body["error"]["fields"] == {
        "hostname": "Not a host name (letters, digits and hyphens, in labels separated by dots).",
        "panel_url": "Not a web address (http:// or https://).",
    }
    assert _state(app, escalated) == ("new", "processing", {})
    # filling fields in without closing is checked too
    status, body = api.post(f"/tasks/{task_id}/fields", {"fields": {"ip": "1.2.3.4.5"}})
    assert status == 422 and body["error"]["fields"] == {"ip": "Not an IP address."}

    good = {**VPS_FIELDS, "panel_url": "https://panel.example.net/"}
    status, body = api.post(f"/tasks/{task_id}/close", {"fields": good})
    assert status == 200, body
    assert _state(app, escalated) == ("closed", "active", good)


def test_a_module_returning_an_invalid_detail_records_an_error_not_the_value(app, api):
    """The sandbox fills ``username`` with ``u<id>``; declared an IP address here, that is
    not one: the attempt fails for good with the reason, nothing reaches the service and
    people get a task to set it up by hand."""
    with db(app):
        vps = ProductType.get(ProductType.code == "vps")
        fields = [dict(f) for f in vps.detail_fields]
        for f in fields:
            if f["name"] == "username":
                f["kind"] = "ip"
        ProductType.update(detail_fields=fields).where(ProductType.id == vps.id).execute()
    _, module, tariff, customer = api.catalog("sandbox", product_type="vps")
    order = api.order(customer["id"], tariff["id"])
    _, paid = api.pay(order)
    op = api.wait_operation(paid["operation_id"], ("manual",))
    assert op["last_error"] == (
        "module returned invalid details, not recorded: username: Not an IP address."
    )
    detail = api.ok("get", f"/operations/{op['id']}")
    assert detail["attempt_log"][-1]["outcome"] == "permanent_error"
    with db(app):
        service = Service.get_by_id(order["service_id"])
        assert service.status == "processing" and service.details == {}
        assert Task.get(Task.operation == op["id"]).status == "new"
        assert Operation.get_by_id(op["id"]).status == "manual"


def test_the_sandbox_details_pass_their_kinds(app, api):
    """Every built-in product type's kinds accept what the sandbox fills in."""
    for code in ("hosting", "vps", "dedicated", "domain", "database", "dns"):
        _, _, tariff, customer = api.catalog("sandbox", product_type=code)
        order = api.order(customer["id"], tariff["id"])
        _, paid = api.pay(order)
        op = api.wait_operation(paid["operation_id"], ("done", "manual"))
        assert op["status"] == "done", (code, op["last_error"])


def test_a_too_long_port_or_ip_says_what_it_should_be():
    with pytest.raises(ValueError, match="Not a port"):
        detail_fields.clean_value({"name": "port", "kind": "port"}, "port-1a2b3c")
    with pytest.raises(ValueError, match="Not an IP address"):
        detail_fields.clean_value({"name": "ip", "kind": "ip"}, "1" * 100)
