"""The ``domains`` order field kind: a list of domain names (the certificate product type
orders one: the first name is the common name), each checked like ``domain``, at most
``max_count`` of them."""

import pytest

from app.db import database
from app.models import ProductType, Service
from app.services import order_fields
from app.services.errors import ValidationError
from tests.support import login

FIELD = {"name": "domains", "label": "Domain names", "kind": "domains", "required": True}


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("example.com", ["example.com"]),
        ("Example.COM, www.example.com", ["example.com", "www.example.com"]),
        (
            "a.example\n b.example\tc.example ,d.example",
            ["a.example", "b.example", "c.example", "d.example"],
        ),
        (["shop.example", " www.shop.example "], ["shop.example", "www.shop.example"]),
        ("Bücher.Example", ["xn--bcher-kva.example"]),
        ("example.com.", ["example.com"]),
    ],
)
def test_names_are_split_checked_and_kept_in_order(raw, expected):
    assert order_fields.clean_value(FIELD, raw) == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            "example.com, not_a_name.com",
            "'not_a_name.com' is not a valid domain name (such as example.com).",
        ),
        ("example.com www.example.com EXAMPLE.com", "example.com is listed twice."),
        ([" ", ""], "Enter at least one domain name such as example.com."),
        (", ,", "Enter at least one domain name such as example.com."),
        (["example.com", 7], "A list of domain names."),
        (7, "A list of domain names."),
        ({"name": "example.com"}, "A list of domain names."),
        ("example.com\x00.evil", "Domain names only, separated by commas, spaces or new lines."),
        ("localhost", "'localhost' is not a valid domain name (such as example.com)."),
        ("192.0.2.1", "'192.0.2.1' is not a valid domain name (such as example.com)."),
        ("*.example.com", "'*.example.com' is not a valid domain name (such as example.com)."),
    ],
)
def test_a_bad_list_says_which_name_and_why(raw, message):
    with pytest.raises(ValueError) as exc:
        order_fields.clean_value(FIELD, raw)
    assert str(exc.value) == message


def test_at_most_max_count_names():
    spec = {**FIELD, "max_count": 3}
    names = [f"n{i}.example.com" for i in range(4)]
    assert order_fields.clean_value(spec, names[:3]) == names[:3]
    for raw in (names, " ".join(names), ", ".join(names) + "x" * 2000):
        with pytest.raises(ValueError, match="At most 3 domain names."):
            order_fields.clean_value(spec, raw)
    # a spec made through the API without a usable count gets the default (10)
    for count in (None, "abc", 0, True, 10_000):
        many = [f"m{i}.example.com" for i in range(11)]
        with pytest.raises(ValueError, match="At most 10 domain names."):
            order_fields.clean_value({**FIELD, "max_count": count}, many)


def test_required_and_missing():
    with pytest.raises(ValidationError) as exc:
        order_fields.clean([FIELD], {"domains": []})
    assert exc.value.fields == {"params.domains": "Domain names is required."}
    assert order_fields.clean([{**FIELD, "required": False}], {"domains": ""}) == {}


def test_declared_in_a_line_and_written_back():
    fields, problems = order_fields.parse(
        "domains | Names | domains:5 | required\nalt | Alt | domains"
    )
    assert problems == []
    assert fields == [
        {"name": "domains", "label": "Names", "kind": "domains", "required": True, "max_count": 5},
        {"name": "alt", "label": "Alt", "kind": "domains", "required": False, "max_count": 10},
    ]
    assert order_fields.format_lines(fields) == (
        "domains | Names | domains:5 | required\nalt | Alt | domains:10"
    )
    for bad in (
        "domains | Names | domains:0",
        "domains | Names | domains:101",
        "d | D | domains:x",
    ):
        _, problems = order_fields.parse(bad)
        assert problems == ["line 1: the number of names must be a number from 1 to 100"], bad


def test_the_certificate_product_type_orders_domain_names(app, api):
    """Migration 0005: the certificate product type's order field is the list of names."""
    _, _, tariff, shopper = api.catalog("sandbox", product_type="certificate")
    shown = [{k: v for k, v in f.items() if v is not None} for f in tariff["order_fields"]]
    assert shown == [
        {
            "name": "domains",
            "label": "Domain names (the first is the common name)",
            "kind": "domains",
            "required": True,
            "max_count": 10,
        }
    ]
    code, body = api.post(
        "/orders",
        {
            "client_id": shopper["id"],
            "tariff_id": tariff["id"],
            "params": {"domains": "shop.example, shop.example"},
        },
    )
    assert code == 422
    assert body["error"]["fields"] == {"params.domains": "shop.example is listed twice."}
    with app.app_context(), database.connection_context():
        assert Service.select().count() == 0
    order = api.order(
        shopper["id"], tariff["id"], {"domains": ["Shop.Example", "www.shop.example"]}
    )
    with app.app_context(), database.connection_context():
        service = Service.get_by_id(order["service_id"])
        assert service.params == {"domains": ["shop.example", "www.shop.example"]}
        assert ProductType.get(ProductType.code == "certificate").order_fields[0]["kind"] == (
            "domains"
        )


def test_the_client_order_form_takes_names_separated_by_commas(app, api, client):
    _, _, tariff, _ = api.catalog("sandbox", product_type="certificate")
    api.ok(
        "post",
        "/clients",
        {"name": "Carol", "email": "carol@example.com", "password": "carol-password"},
        status=201,
    )
    login(client, "carol@example.com", "carol-password")
    page = client.get("/my/order").get_data(as_text=True)
    assert f'id="f-{tariff["id"]}-domains"' in page
    assert 'placeholder="example.com, www.example.com"' in page
    response = client.post(
        "/my/order",
        data={"tariff_id": tariff["id"], "params.domains": "carol.example, -bad-.example"},
    )
    assert response.status_code == 422
    assert "&#39;-bad-.example&#39; is not a valid domain name" in response.get_data(as_text=True)
    response = client.post(
        "/my/order",
        data={"tariff_id": tariff["id"], "params.domains": "carol.example, www.carol.example"},
    )
    assert response.status_code == 302
    with app.app_context(), database.connection_context():
        assert Service.get().params == {"domains": ["carol.example", "www.carol.example"]}
