"""Staff switch hot mode (stock buckets) per product: in the admin (the change form, through
product_update's compare-and-set, and two list actions, through product_set_buckets) and over the
API (PATCH with If-Match). Switching gives the buckets' units back to their levels, so no
availability moves; shoppers never see the setting."""

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from inventory import services as stock
from inventory.models import Product, StockBucket, StockLevel, StockMovement
from orders import services as orders
from orders.api import render_order
from tests.conftest import bearer
from tests.factories import ProductFactory, UserFactory, WarehouseFactory
from tests.invariants import assert_stock_invariants
from tests.inventory.test_admin import form_values
from tests.orders.conftest import ADDRESS
from users.services import api_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop():
    """MUG (10 in MAIN) and TEA (6 in MAIN), both cold."""
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG", name="Blue mug", price="12.50")
    ProductFactory(sku="TEA", name="Green tea", price="4.00")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=6)


@pytest.fixture
def mug(shop) -> Product:
    return Product.objects.get(sku="MUG")


@pytest.fixture
def hot_mug(mug) -> Product:
    """MUG in hot mode (4 buckets) after an order of 3: MAIN's buckets hold its other 7 units."""
    stock.product_set_buckets(sku="MUG", buckets=4)
    orders.order_place(
        user=UserFactory(),
        lines=[orders.OrderLineRequest("MUG", 3)],
        shipping_address=ADDRESS,
        render=render_order,
        idempotency_key=uuid.uuid4().hex,
        fingerprint="MUG:3",
    )
    assert held() == 7
    return Product.objects.get(sku="MUG")


def held(sku: str = "MUG") -> int:
    return StockBucket.objects.filter(level__product__sku=sku).aggregate(units=Sum("units"))["units"] or 0


def main_level(sku: str = "MUG") -> StockLevel:
    return StockLevel.objects.get(product__sku=sku, warehouse__code="MAIN")


def url(name: str, *args) -> str:
    return reverse(f"admin:inventory_{name}", args=args)


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def change_form(admin, product: Product) -> dict:
    """What the browser would post from the product's change page as loaded now."""
    return {**form_values(admin.get(url("product_change", product.pk))), "_save": "Save"}


# --- the admin's change form ------------------------------------------------------------------------


def test_the_change_form_shows_hot_mode_with_what_it_does(admin, mug):
    response = admin.get(url("product_change", mug.pk))

    content = response.content.decode()
    assert "Hot mode: stock buckets" in content
    assert "0 turns hot mode off" in content
    values = form_values(response)
    assert values["stock_buckets"] == "0"


def test_the_add_form_has_no_hot_mode(admin, db):
    assert 'name="stock_buckets"' not in admin.get(url("product_add")).content.decode()


def test_the_change_form_turns_hot_mode_on_through_the_compare_and_set(admin, admin_user, mug):
    response = admin.post(url("product_change", mug.pk), {**change_form(admin, mug), "stock_buckets": "8"})

    assert response.status_code == 302
    mug.refresh_from_db()
    assert (mug.stock_buckets, mug.version) == (8, 2)


def test_the_change_form_switches_with_the_units_back_and_the_actor_in_the_ledger(admin, admin_user, hot_mug):
    response = admin.post(url("product_change", hot_mug.pk), {**change_form(admin, hot_mug), "stock_buckets": "0"})

    assert response.status_code == 302
    level = main_level()
    assert (level.on_hand, level.reserved, held()) == (10, 3, 0)
    assert not StockBucket.objects.filter(level=level).exists()
    back = StockMovement.objects.filter(level=level, reason="bucket").latest("id")
    assert (back.delta_bucketed, back.actor_id) == (-7, admin_user.pk)
    assert admin.get(url("product_changelist")).content.decode().count('<td class="field-available">7</td>') == 1
    assert_stock_invariants()


def test_a_stale_change_form_switches_nothing(admin, mug):
    loaded = change_form(admin, mug)
    stock.product_update(sku="MUG", expected_version=1, changes={"name": "Red mug"})  # someone else

    response = admin.post(url("product_change", mug.pk), {**loaded, "stock_buckets": "8"})

    assert response.status_code == 200
    assert "changed by someone else" in response.content.decode()
    mug.refresh_from_db()
    assert (mug.name, mug.stock_buckets, mug.version) == ("Red mug", 0, 2)


def test_a_page_loaded_before_a_switch_made_meanwhile_is_refused_and_undoes_nothing(admin, mug):
    loaded = change_form(admin, mug)
    stock.product_set_buckets(sku="MUG", buckets=16)  # the list's action moves the version too

    response = admin.post(url("product_change", mug.pk), {**loaded, "name": "Red mug"})

    assert response.status_code == 200
    assert "changed by someone else" in response.content.decode()
    mug.refresh_from_db()
    assert (mug.name, mug.stock_buckets, mug.version) == ("Blue mug", 16, 2)


def test_a_post_without_hot_mode_leaves_it_as_it_is(admin, mug):
    stock.product_set_buckets(sku="MUG", buckets=16)
    loaded = {k: v for k, v in change_form(admin, mug).items() if not k.endswith("stock_buckets")}

    response = admin.post(url("product_change", mug.pk), {**loaded, "name": "Red mug"})

    assert response.status_code == 302
    mug.refresh_from_db()
    assert (mug.name, mug.stock_buckets) == ("Red mug", 16)


@pytest.mark.parametrize("value", ["65", "-1", "x", "1.5", ""])
def test_bad_hot_mode_values_are_form_errors_and_change_nothing(admin, mug, value):
    response = admin.post(url("product_change", mug.pk), {**change_form(admin, mug), "stock_buckets": value})

    assert response.status_code == 200
    assert "stock_buckets" in response.context["adminform"].form.errors
    mug.refresh_from_db()
    assert (mug.stock_buckets, mug.version) == (0, 1)


# --- the admin's list: actions and column -----------------------------------------------------------


def test_the_actions_turn_hot_mode_on_and_off_per_product(admin, admin_user, hot_mug):
    tea = Product.objects.get(sku="TEA")

    on = admin.post(url("product_changelist"), {"action": "turn_hot_mode_on", "_selected_action": [hot_mug.pk, tea.pk]})

    assert on.status_code == 302
    assert ("success", "Hot mode on (64 buckets): MUG, TEA.") in messages_of(on)
    assert dict(Product.objects.values_list("sku", "stock_buckets")) == {"MUG": 64, "TEA": 64}
    assert held() == 0 and main_level().reserved == 3  # the units went back; the next order spreads them
    assert Product.objects.get(sku="MUG").version == hot_mug.version + 1  # a switch is an edit

    off = admin.post(url("product_changelist"), {"action": "turn_hot_mode_off", "_selected_action": [tea.pk]})

    assert ("success", "Hot mode off: TEA.") in messages_of(off)
    assert dict(Product.objects.values_list("sku", "stock_buckets")) == {"MUG": 64, "TEA": 0}
    assert StockMovement.objects.filter(reason="bucket", actor=admin_user, delta_bucketed=-7).exists()
    assert_stock_invariants()


def test_the_list_shows_which_products_are_hot(admin, hot_mug):
    response = admin.get(url("product_changelist"))

    content = response.content.decode()
    assert "Hot</a>" in content or ">Hot<" in content
    assert '<td class="field-hot">4</td>' in content
    assert '<td class="field-hot">—</td>' in content


def test_staff_without_the_change_permission_cannot_switch_hot_mode(mug):
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_product"))
    client = Client()
    client.force_login(viewer)

    client.post(url("product_changelist"), {"action": "turn_hot_mode_on", "_selected_action": [mug.pk]})

    mug.refresh_from_db()
    assert mug.stock_buckets == 0


# --- the API ----------------------------------------------------------------------------------------


def patch(client, body, *, if_match: str | None = '"1"'):
    headers = {"HTTP_IF_MATCH": if_match} if if_match else {}
    return client.patch("/api/v1/products/MUG", body, format="json", **headers)


def test_staff_patch_hot_mode_with_if_match(staff_client, api_client, hot_mug):
    tag = staff_client.get("/api/v1/products/MUG")["ETag"]

    response = patch(staff_client, {"stock_buckets": 8}, if_match=tag)

    assert response.status_code == 200
    body = response.json()
    assert (body["stock_buckets"], body["version"], body["available"]) == (8, hot_mug.version + 1, 7)
    assert response["ETag"] == f'"{hot_mug.version + 1}-7"'
    assert held() == 0 and main_level().reserved == 3
    assert staff_client.get("/api/v1/products/MUG").json()["stock_buckets"] == 8
    assert "stock_buckets" not in api_client.get("/api/v1/products/MUG").json()
    assert_stock_invariants()


def test_staff_see_a_switch_the_admin_made_with_a_new_etag(staff_client, mug, django_capture_on_commit_callbacks):
    first = staff_client.get("/api/v1/products/MUG")
    assert first.json()["stock_buckets"] == 0

    with django_capture_on_commit_callbacks(execute=True):  # the catalogue entry is dropped after commit
        stock.product_set_buckets(sku="MUG", buckets=16)

    again = staff_client.get("/api/v1/products/MUG", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 200 and again.json()["stock_buckets"] == 16


def test_staff_responses_carry_hot_mode(staff_client, db):
    created = staff_client.post("/api/v1/products", {"sku": "NEW", "name": "New", "price": "1.00"}, format="json")

    assert created.status_code == 201 and created.json()["stock_buckets"] == 0


def test_hot_mode_needs_if_match_and_a_current_one(staff_client, mug):
    missing = patch(staff_client, {"stock_buckets": 8}, if_match=None)
    assert missing.status_code == 428 and missing.json()["error"]["code"] == "precondition_required"

    assert patch(staff_client, {"name": "Red mug"}).status_code == 200
    stale = patch(staff_client, {"stock_buckets": 8})
    assert stale.status_code == 412
    assert Product.objects.get(sku="MUG").stock_buckets == 0


def test_only_staff_switch_hot_mode(customer_client, api_client, mug):
    refused = patch(customer_client, {"stock_buckets": 8})
    anonymous = patch(api_client, {"stock_buckets": 8})

    assert refused.status_code == 403 and refused.json()["error"]["code"]
    assert anonymous.status_code in (401, 403) and anonymous.json()["error"]["code"]
    assert Product.objects.get(sku="MUG").stock_buckets == 0


def test_a_staff_user_without_the_staff_scope_cannot_switch_hot_mode(staff_user, mug):
    _, key = api_key_create(user=staff_user, scopes=["read", "write"])

    response = patch(bearer(APIClient(), key), {"stock_buckets": 8})

    assert response.status_code == 403
    assert Product.objects.get(sku="MUG").stock_buckets == 0


@pytest.mark.parametrize("value", [65, -1, "x", 1.5, True, None, [4], {"n": 4}])
def test_bad_hot_mode_values_are_400_in_the_envelope(staff_client, mug, value):
    response = patch(staff_client, {"stock_buckets": value})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] and "stock_buckets" in error["fields"]
    mug.refresh_from_db()
    assert (mug.stock_buckets, mug.version) == (0, 1)


def test_the_schema_declares_hot_mode(db):
    schemas = SchemaGenerator().get_schema(request=None, public=True)["components"]["schemas"]

    update = schemas["PatchedProductUpdateRequest"]["properties"]["stock_buckets"]
    assert (update["type"], update["minimum"], update["maximum"]) == ("integer", 0, 64)
    assert "stock_buckets" in schemas["Product"]["properties"]
    assert "stock_buckets" not in schemas["Product"]["required"]  # shoppers' bodies leave it out
