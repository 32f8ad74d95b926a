"""One SKU pattern: the model's validator, is_sku, the product page's URL and the import agree."""

import io

import pytest
from django.core.exceptions import ValidationError
from django.urls import Resolver404, resolve

from inventory.imports import parse_stock_csv
from inventory.models import SKU_VALIDATOR, is_sku

GOOD = ["MUG", "a", "0-mug_2.b", "X" * 64]
BAD = ["", "-mug", ".mug", "_mug", "X" * 65, "mug cup", "mug/cup", "mug\n", "müg", "mug%"]


def accepted_everywhere(sku: str) -> set[bool]:
    try:
        SKU_VALIDATOR(sku)
        validator = True
    except ValidationError:
        validator = False
    try:
        url = resolve(f"/products/{sku}/").url_name == "product"
    except Resolver404:
        url = False
    line = f"sku,warehouse,on_hand\n{sku},MAIN,1\n".encode()
    (row,) = parse_stock_csv(io.BytesIO(line), warehouses={"MAIN": 1}, max_line_bytes=1000)
    imported = row[-1] is None
    return {validator, is_sku(sku), url, imported}


@pytest.mark.parametrize("sku", GOOD)
def test_a_good_sku_is_accepted_by_the_validator_the_product_url_and_the_import(sku):
    assert accepted_everywhere(sku) == {True}


@pytest.mark.parametrize("sku", [sku for sku in BAD if sku.strip() == sku and sku])
def test_a_bad_sku_is_refused_by_the_validator_the_product_url_and_the_import(sku):
    assert accepted_everywhere(sku) == {False}


@pytest.mark.parametrize("value", [*BAD, None, 42, b"MUG"])
def test_is_sku_refuses_anything_else(value):
    assert not is_sku(value)
