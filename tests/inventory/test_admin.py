from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.contrib.messages import get_messages
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from inventory import services
from inventory.models import Product, StockLevel, StockMovement, Warehouse
from inventory.selectors import stock_ledger_breaches
from tests.factories import ProductFactory, WarehouseFactory
from users.models import User

pytestmark = pytest.mark.django_db


@pytest.fixture
def product():
    return ProductFactory(sku="MUG", name="Blue mug", price=Decimal("12.50"))


@pytest.fixture
def main():
    return WarehouseFactory(code="MAIN", priority=1)


@pytest.fixture
def east():
    return WarehouseFactory(code="EAST", priority=2)


@pytest.fixture
def level(product, main) -> StockLevel:
    """MUG in MAIN: 10 on hand, 3 reserved.

    Reserved through the stock primitive, without an order: these tests check the levels and
    their ledger (invariants 1 and 2), not the allocations of orders (invariant 3).
    """
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10, reference="PO-1")
    with transaction.atomic():
        services.reserve_stock(lines=[(product, 3)], reference="ORD-1")
    return StockLevel.objects.get(product=product, warehouse=main)


def url(name: str, *args) -> str:
    return reverse(f"admin:inventory_{name}", args=args)


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def figures(level: StockLevel) -> tuple[int, int, int]:
    level.refresh_from_db()
    return level.on_hand, level.reserved, level.version


# --- pages render --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["product", "warehouse", "stocklevel", "stockmovement"])
def test_each_changelist_renders(admin, level, model):
    response = admin.get(url(f"{model}_changelist"))

    assert response.status_code == 200


def test_changelists_search_and_filter(admin, level):
    assert admin.get(url("product_changelist"), {"q": "mug", "active__exact": "1"}).status_code == 200
    assert admin.get(url("warehouse_changelist"), {"q": "MAIN", "active__exact": "1"}).status_code == 200
    levels = admin.get(url("stocklevel_changelist"), {"q": "MAIN", "warehouse__id__exact": level.warehouse_id})
    assert levels.status_code == 200
    assert b"MUG" in levels.content
    response = admin.get(url("stockmovement_changelist"), {"q": "PO-1", "reason__exact": "receipt"})
    assert response.status_code == 200
    assert b"PO-1" in response.content


@pytest.mark.parametrize("model", ["product", "stocklevel", "stockmovement"])
def test_changelists_do_not_query_per_row(admin, main, east, model):
    def queries_for_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin.get(url(f"{model}_changelist")).status_code == 200
        return len(queries)

    def add_products(count: int) -> None:
        for _ in range(count):
            sku = ProductFactory().sku
            services.stock_receive(sku=sku, warehouse_code="MAIN", quantity=3, reference="PO")
            services.stock_transfer(sku=sku, from_code="MAIN", to_code="EAST", quantity=1)

    add_products(2)
    few = queries_for_page()
    add_products(10)

    assert queries_for_page() == few


def test_each_change_page_renders(admin, level, product, main):
    movement = StockMovement.objects.filter(level=level).first()

    for page in [
        url("product_change", product.pk),
        url("warehouse_change", main.pk),
        url("stocklevel_change", level.pk),
        url("stockmovement_change", movement.pk),
        url("product_add"),
        url("warehouse_add"),
    ]:
        assert admin.get(page).status_code == 200, page


def test_product_page_shows_its_stock_per_warehouse(admin, level, product):
    response = admin.get(url("product_change", product.pk))

    assert b"Stock per warehouse" in response.content
    assert b"MAIN" in response.content


def test_stock_level_page_shows_movements_and_operations(admin, level):
    response = admin.get(url("stocklevel_change", level.pk))

    content = response.content.decode()
    assert "Latest movements" in content
    assert "PO-1" in content and "ORD-1" in content
    for name in ["receive", "adjust", "count", "transfer"]:
        assert url(f"stocklevel_{name}", level.pk) in content
    # Quantities are not form fields: nothing to edit, no save button.
    assert 'name="on_hand"' not in content
    assert 'name="_save"' not in content


def test_all_movements_link_filters_the_ledger_by_level(admin, level, product, east):
    services.stock_receive(sku="MUG", warehouse_code="EAST", quantity=2, reference="PO-EAST")

    response = admin.get(url("stocklevel_change", level.pk))
    link = response.context["movements_url"]
    ledger = admin.get(link)

    assert ledger.status_code == 200
    assert b"PO-1" in ledger.content
    assert b"PO-EAST" not in ledger.content


def test_stock_level_page_lists_at_most_50_movements(admin, product, main):
    for _ in range(55):
        services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=1, reference="BULK")
    stock = StockLevel.objects.get(product=product, warehouse=main)

    response = admin.get(url("stocklevel_change", stock.pk))

    assert response.status_code == 200
    assert response.content.decode().count("BULK") == 50


@pytest.mark.parametrize("operation", ["receive", "adjust", "count", "transfer"])
def test_each_operation_form_renders(admin, level, east, operation):
    response = admin.get(url(f"stocklevel_{operation}", level.pk))

    assert response.status_code == 200
    assert b'name="csrfmiddlewaretoken"' in response.content


def test_stock_levels_cannot_be_added_edited_or_deleted(admin, level):
    assert admin.get(url("stocklevel_add")).status_code == 403
    response = admin.post(url("stocklevel_change", level.pk), {"on_hand": 999, "reserved": 0, "version": 1})
    assert response.status_code == 403
    assert admin.post(url("stocklevel_delete", level.pk), {"post": "yes"}).status_code == 403
    assert figures(level) == (10, 3, 2)


def test_the_ledger_is_read_only(admin, level):
    movement = StockMovement.objects.filter(level=level).first()

    assert admin.get(url("stockmovement_add")).status_code == 403
    assert admin.post(url("stockmovement_change", movement.pk), {"delta_on_hand": 99}).status_code == 403
    assert admin.post(url("stockmovement_delete", movement.pk), {"post": "yes"}).status_code == 403
    assert StockMovement.objects.filter(level=level).count() == 2


# --- stock operations --------------------------------------------------------------------------------


def test_receipt_form_adds_stock_with_its_ledger_row(admin, admin_user, level):
    response = admin.post(url("stocklevel_receive", level.pk), {"quantity": "5", "reference": "PO-2", "note": ""})

    assert response.status_code == 302
    assert response["Location"] == url("stocklevel_change", level.pk)
    assert figures(level) == (15, 3, 3)
    receipt = StockMovement.objects.get(level=level, reference="PO-2")
    assert (receipt.reason, receipt.delta_on_hand, receipt.actor) == ("receipt", 5, admin_user)
    assert any("Received 5" in message for message in messages_of(response))
    assert stock_ledger_breaches() == []


def test_new_receipt_creates_the_level(admin, admin_user, product, east):
    response = admin.post(
        url("stocklevel_receive_new"), {"sku": "MUG", "warehouse": "EAST", "quantity": "7", "reference": "PO-9"}
    )

    assert response.status_code == 302
    created = StockLevel.objects.get(product=product, warehouse=east)
    assert response["Location"] == url("stocklevel_change", created.pk)
    assert (created.on_hand, created.reserved) == (7, 0)
    assert StockMovement.objects.get(level=created).actor == admin_user


def test_new_receipt_of_an_unknown_sku_is_a_form_error(admin, east):
    response = admin.post(url("stocklevel_receive_new"), {"sku": "NOPE", "warehouse": "EAST", "quantity": "7"})

    assert response.status_code == 200
    assert "Unknown SKU" in str(response.context["form"].errors["sku"])
    assert not StockLevel.objects.exists()


def test_adjustment_form_changes_stock_with_its_ledger_row(admin, admin_user, level):
    response = admin.post(
        url("stocklevel_adjust", level.pk), {"delta": "-2", "note": "two broken", "expected_version": level.version}
    )

    assert response.status_code == 302
    assert figures(level) == (8, 3, 3)
    adjustment = StockMovement.objects.get(level=level, reason="adjustment")
    assert (adjustment.delta_on_hand, adjustment.note, adjustment.actor) == (-2, "two broken", admin_user)
    assert stock_ledger_breaches() == []


def test_adjustment_form_is_prefilled_with_the_level_version(admin, level):
    response = admin.get(url("stocklevel_adjust", level.pk))

    assert response.context["form"]["expected_version"].value() == level.version


def test_count_form_sets_on_hand_with_its_ledger_row(admin, level):
    response = admin.post(url("stocklevel_count", level.pk), {"on_hand": "6", "expected_version": level.version})

    assert response.status_code == 302
    assert figures(level) == (6, 3, 3)
    count = StockMovement.objects.get(level=level, reason="count")
    assert count.delta_on_hand == -4
    assert stock_ledger_breaches() == []


def test_transfer_form_moves_available_units(admin, level, product, east):
    response = admin.post(url("stocklevel_transfer", level.pk), {"to_warehouse": "EAST", "quantity": "4"})

    assert response.status_code == 302
    assert figures(level)[:2] == (6, 3)
    target = StockLevel.objects.get(product=product, warehouse=east)
    assert target.on_hand == 4
    moves = StockMovement.objects.filter(reason="transfer").order_by("delta_on_hand")
    assert [(m.level_id, m.delta_on_hand) for m in moves] == [(level.pk, -4), (target.pk, 4)]
    assert stock_ledger_breaches() == []


def test_transfer_of_more_than_available_is_refused(admin, level, east):
    response = admin.post(url("stocklevel_transfer", level.pk), {"to_warehouse": "EAST", "quantity": "8"})

    assert response.status_code == 200
    assert "Only 7 units of MUG are available." in response.context["form"].errors["quantity"]
    assert figures(level) == (10, 3, 2)
    assert not StockMovement.objects.filter(reason="transfer").exists()


@pytest.mark.parametrize(
    ("operation", "data"),
    [
        ("adjust", {"delta": "1", "note": "found one"}),
        ("count", {"on_hand": "12"}),
    ],
)
def test_stale_expected_version_shows_the_conflict_and_changes_nothing(admin, level, operation, data):
    loaded_version = level.version
    services.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=1)  # someone else, meanwhile
    movements = StockMovement.objects.count()

    response = admin.post(url(f"stocklevel_{operation}", level.pk), {**data, "expected_version": loaded_version})

    assert response.status_code == 200
    assert "changed by someone else" in response.content.decode()
    assert figures(level) == (11, 3, 3)
    assert StockMovement.objects.count() == movements
    # The page shows the figures as they are now.
    assert response.context["level"].on_hand == 11


def test_adjustment_below_reserved_shows_an_error_and_changes_nothing(admin, level):
    response = admin.post(
        url("stocklevel_adjust", level.pk), {"delta": "-8", "note": "lost", "expected_version": level.version}
    )

    assert response.status_code == 200
    assert "below the 3 reserved units" in response.content.decode()
    assert figures(level) == (10, 3, 2)
    assert not StockMovement.objects.filter(reason="adjustment").exists()


def test_count_below_reserved_shows_an_error_and_changes_nothing(admin, level):
    response = admin.post(url("stocklevel_count", level.pk), {"on_hand": "2", "expected_version": level.version})

    assert response.status_code == 200
    assert "3 units are reserved" in response.content.decode()
    assert figures(level) == (10, 3, 2)


@pytest.mark.parametrize(
    ("operation", "data", "field"),
    [
        ("receive", {"quantity": "lots"}, "quantity"),
        ("receive", {"quantity": "-5"}, "quantity"),
        ("receive", {"quantity": "0"}, "quantity"),
        ("receive", {"quantity": "99999999999999999999"}, "quantity"),
        ("adjust", {"delta": "1.5", "note": "x", "expected_version": "2"}, "delta"),
        ("adjust", {"delta": "0", "note": "x", "expected_version": "2"}, "delta"),
        ("adjust", {"delta": "1", "note": "", "expected_version": "2"}, "note"),
        ("adjust", {"delta": "1", "note": "x", "expected_version": "two"}, "expected_version"),
        ("count", {"on_hand": "-1", "expected_version": "2"}, "on_hand"),
        ("count", {"on_hand": "ten", "expected_version": "2"}, "on_hand"),
        ("count", {"on_hand": "5"}, "expected_version"),
        ("transfer", {"to_warehouse": "EAST", "quantity": "-3"}, "quantity"),
        ("transfer", {"to_warehouse": "MAIN", "quantity": "1"}, "to_warehouse"),
        ("transfer", {"to_warehouse": "NOWHERE", "quantity": "1"}, "to_warehouse"),
    ],
)
def test_bad_operation_input_shows_form_errors_and_changes_nothing(admin, level, east, operation, data, field):
    response = admin.post(url(f"stocklevel_{operation}", level.pk), data)

    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert figures(level) == (10, 3, 2)
    assert StockMovement.objects.count() == 2


def test_operation_on_a_missing_level_redirects_with_a_message(admin):
    response = admin.get(url("stocklevel_adjust", 999_999))

    assert response.status_code == 302
    assert any("does not exist" in message for message in messages_of(response))


# --- who may use the admin --------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["anonymous", "customer", "inactive_staff"])
def test_non_staff_are_sent_to_the_admin_login(level, customer, who):
    client = Client()
    if who == "customer":
        client.force_login(customer)
    elif who == "inactive_staff":
        client.force_login(User.objects.create_user(email="gone@example.com", is_staff=True, is_active=False))
    login = reverse("admin:login")

    for page in [url("stocklevel_changelist"), url("stocklevel_change", level.pk), url("stocklevel_adjust", level.pk)]:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith(login), page
    response = client.post(url("stocklevel_receive", level.pk), {"quantity": "5"})
    assert response.status_code == 302
    assert response["Location"].startswith(login)
    assert figures(level) == (10, 3, 2)


def test_staff_without_the_change_permission_cannot_run_operations(level, staff_user):
    client = Client()
    client.force_login(staff_user)

    response = client.post(url("stocklevel_receive", level.pk), {"quantity": "5"})

    assert response.status_code == 403
    assert figures(level) == (10, 3, 2)


# --- products ----------------------------------------------------------------------------------------


def product_form(product: Product, **changes) -> dict:
    """The product change form as the browser posts it (with the stock inline's management form)."""
    data = {
        "name": product.name,
        "description": product.description,
        "price": str(product.price),
        "active": "on" if product.active else "",
        "low_stock_threshold": str(product.low_stock_threshold),
        "version": str(product.version),
        "stock_levels-TOTAL_FORMS": "0",
        "stock_levels-INITIAL_FORMS": "0",
        "stock_levels-MIN_NUM_FORMS": "0",
        "stock_levels-MAX_NUM_FORMS": "1000",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value != ""}


class FormValues(HTMLParser):
    """What a browser would submit from the page's main form: inputs, textareas, selected options."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, str] = {}
        self._textarea = self._select = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in {"submit", "checkbox"}:
            self.values[name] = attrs.get("value") or ""
        elif tag == "input" and name and "checked" in attrs:
            self.values[name] = "on"
        elif tag == "textarea":
            self._textarea = name
            self.values[name] = ""
        elif tag == "select":
            self._select = name
        elif tag == "option" and self._select and "selected" in attrs:
            self.values[self._select] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data):
        if self._textarea:
            self.values[self._textarea] += data


def form_values(response) -> dict:
    parser = FormValues()
    parser.feed(response.content.decode())
    return parser.values


def test_product_change_form_round_trips_like_a_browser(admin, level, product):
    values = form_values(admin.get(url("product_change", product.pk)))
    assert values["stock_levels-INITIAL_FORMS"] == "1"

    response = admin.post(url("product_change", product.pk), {**values, "name": "Red mug", "_save": "Save"})

    assert response.status_code == 302
    product.refresh_from_db()
    assert (product.name, product.version) == ("Red mug", 2)
    assert figures(level) == (10, 3, 2)


def test_product_add_creates_it_through_the_service(admin):
    response = admin.post(
        url("product_add"),
        {"sku": "TEA-1", "name": "Green tea", "price": "4.20", "active": "on", "low_stock_threshold": "3"},
    )

    assert response.status_code == 302
    created = Product.objects.get(sku="TEA-1")
    assert (created.name, created.price, created.version) == ("Green tea", Decimal("4.20"), 1)


def test_product_add_with_a_taken_sku_is_a_form_error(admin, product):
    response = admin.post(url("product_add"), {"sku": "MUG", "name": "Other", "price": "1", "low_stock_threshold": "3"})

    assert response.status_code == 200
    assert "sku" in response.context["adminform"].form.errors
    assert Product.objects.get(sku="MUG").name == "Blue mug"


def test_product_change_form_carries_the_version(admin, product):
    response = admin.get(url("product_change", product.pk))

    assert b'type="hidden" name="version" value="1"' in response.content


def test_product_edit_goes_through_compare_and_set(admin, product):
    response = admin.post(url("product_change", product.pk), product_form(product, name="Red mug", price="13.00"))

    assert response.status_code == 302
    product.refresh_from_db()
    assert (product.name, product.price, product.version) == ("Red mug", Decimal("13.00"), 2)


def test_product_edit_with_a_stale_version_is_refused_and_overwrites_nothing(admin, product):
    loaded = product_form(product, name="Red mug")
    services.product_update(sku="MUG", expected_version=1, changes={"price": Decimal("15.00")})  # someone else

    response = admin.post(url("product_change", product.pk), loaded)

    assert response.status_code == 200
    assert "changed by someone else" in response.content.decode()
    product.refresh_from_db()
    assert (product.name, product.price, product.version) == ("Blue mug", Decimal("15.00"), 2)


def test_product_edit_with_bad_input_shows_form_errors(admin, product):
    response = admin.post(url("product_change", product.pk), product_form(product, price="-1", low_stock_threshold="x"))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert {"price", "low_stock_threshold"} <= set(errors)
    product.refresh_from_db()
    assert (product.price, product.version) == (Decimal("12.50"), 1)


def test_products_cannot_be_deleted(admin, product):
    assert admin.post(url("product_delete", product.pk), {"post": "yes"}).status_code == 403
    assert Product.objects.filter(pk=product.pk).exists()


# --- warehouses --------------------------------------------------------------------------------------


def test_warehouse_add_creates_it_through_the_service(admin):
    response = admin.post(url("warehouse_add"), {"code": "NORTH", "name": "North", "priority": "5"})

    assert response.status_code == 302
    assert Warehouse.objects.get(code="NORTH").active


def test_warehouse_add_with_a_bad_code_is_a_form_error(admin):
    response = admin.post(url("warehouse_add"), {"code": "north wing", "name": "North", "priority": "5"})

    assert response.status_code == 200
    assert "code" in response.context["adminform"].form.errors
    assert not Warehouse.objects.exists()


def test_warehouse_edit_changes_name_and_priority_only(admin, main):
    response = admin.post(url("warehouse_change", main.pk), {"name": "Main hall", "priority": "7", "active": ""})

    assert response.status_code == 302
    main.refresh_from_db()
    assert (main.name, main.priority, main.active) == ("Main hall", 7, True)


def test_deactivation_reports_per_warehouse_and_refuses_a_busy_one(admin, level, main, east):
    response = admin.post(
        url("warehouse_changelist"),
        {"action": "deactivate_warehouses", "_selected_action": [main.pk, east.pk]},
    )

    assert response.status_code == 302
    main.refresh_from_db()
    east.refresh_from_db()
    assert (main.active, east.active) == (True, False)
    notes = {(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)}
    assert ("success", "EAST deactivated.") in notes
    assert any(tag == "error" and text.startswith("MAIN was not deactivated") for tag, text in notes)


def test_activation_action_activates(admin, east):
    services.warehouse_deactivate(code="EAST")

    response = admin.post(url("warehouse_changelist"), {"action": "activate_warehouses", "_selected_action": [east.pk]})

    assert response.status_code == 302
    east.refresh_from_db()
    assert east.active
    assert "EAST activated." in messages_of(response)


# --- level settings: safety stock, backorder cap, reorder point ----------------------------------


def test_settings_form_shows_the_level_and_saves_its_settings(admin, level):
    page = admin.get(url("stocklevel_settings", level.pk))
    assert page.status_code == 200
    assert page.context["form"]["safety_stock"].value() == 0

    response = admin.post(
        url("stocklevel_settings", level.pk),
        {"safety_stock": "4", "backorder_cap": "0", "reorder_point": "5", "reorder_quantity": "20"},
    )

    assert response.status_code == 302, response.content
    level.refresh_from_db()
    assert (level.safety_stock, level.reorder_point, level.reorder_quantity, level.available) == (4, 5, 20, 3)
    assert "safety stock 4" in messages_of(response)[0]
    listing = admin.get(url("stocklevel_changelist")).content.decode()
    assert "Settings" in listing


def test_settings_form_refuses_a_cap_below_what_is_backordered_and_changes_nothing(admin, level):
    StockLevel.objects.filter(pk=level.pk).update(backorder_cap=5)
    StockLevel.objects.filter(pk=level.pk).update(backordered=2)  # as an order beyond the shelf would
    response = admin.post(
        url("stocklevel_settings", level.pk),
        {"safety_stock": "0", "backorder_cap": "1", "reorder_point": "", "reorder_quantity": "0"},
    )

    assert response.status_code == 200
    assert "Below the 2 units already backordered here." in response.content.decode()
    level.refresh_from_db()
    assert level.backorder_cap == 5


def test_product_change_form_sets_a_backorder_policy_on_every_level(admin, level, product, east):
    services.stock_receive(sku="MUG", warehouse_code="EAST", quantity=1)
    values = form_values(admin.get(url("product_change", product.pk)))
    assert values["backorder_policy"] == "deny"

    response = admin.post(
        url("product_change", product.pk),
        {**values, "backorder_policy": "backorder", "backorder_cap": "5", "max_per_order": "3", "_save": "Save"},
    )

    assert response.status_code == 302, response.content
    product.refresh_from_db()
    assert (product.backorder_policy, product.backorder_cap, product.max_per_order) == ("backorder", 5, 3)
    assert sorted(StockLevel.objects.filter(product=product).values_list("backorder_cap", flat=True)) == [5, 5]

    refused = admin.post(
        url("product_change", product.pk),
        {**form_values(admin.get(url("product_change", product.pk))), "backorder_policy": "preorder", "_save": "Save"},
    )
    assert refused.status_code == 200
    assert "A preorder needs the date it is taken until." in refused.content.decode()
    product.refresh_from_db()
    assert product.backorder_policy == "backorder"
