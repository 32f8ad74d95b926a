"""POST /orders' body: the hand-written fast path takes only what OrderRequestSerializer takes
unchanged, and gives the same validated data; everything else is left to the serializer."""

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError

from orders.serializers import OrderRequestSerializer, _well_formed_order_request, order_request_data

ADDRESS = {"name": "Ada", "line1": "1 Main St", "city": "Lyon", "postal_code": "69001", "country": "FR"}

# Values near every edge the serializer cares about: types, whitespace, blanks, lengths, NUL,
# surrogates, bounds of quantity, SKU characters.
ODD = st.one_of(
    st.sampled_from(["", " ", " a", "a ", "\n", "a\x00b", "\ud800", "é", "fr", "FRA", "F", "5", "-MUG", "MUG\n"]),
    st.sampled_from(["M" * 64, "M" * 65, "x" * 20, "x" * 21, "x" * 100, "x" * 101, "x" * 200, "x" * 201]),
    st.sampled_from([0, -1, 1000, 1001, True, False, None, 1.0, 2.5, [], {}]),
    st.text(max_size=6),
)
PLACES = ["sku", "quantity", "line", "lines", "address", "reference", "body", "duplicate"] + [
    f"address.{key}" for key in (*ADDRESS, "line2")
]


@st.composite
def bodies(draw):
    """A valid body, then none, one or two of its values replaced by an odd one."""
    skus = draw(
        st.lists(st.sampled_from(["MUG", "TEA", "a.b_c-1", "M" * 64, "Z9"]), min_size=1, max_size=3, unique=True)
    )
    body = {
        "lines": [{"sku": sku, "quantity": draw(st.integers(1, 1000))} for sku in skus],
        "shipping_address": dict(ADDRESS),
    }
    if draw(st.booleans()):
        body["reference"] = draw(st.sampled_from(["", "PO-7"]))
    if draw(st.booleans()):
        body["shipping_address"]["line2"] = draw(st.sampled_from(["", "Flat 2"]))
    for place in draw(st.lists(st.sampled_from(PLACES), max_size=2)):
        if not isinstance(body, dict):
            break
        odd = draw(ODD)
        line = body["lines"][0] if isinstance(body.get("lines"), list) and body["lines"] else None
        if place in ("sku", "quantity") and isinstance(line, dict):
            line[place] = odd
        elif place == "line" and line is not None:
            body["lines"][0] = odd
        elif place == "duplicate" and line is not None:
            body["lines"].append(dict(line) if isinstance(line, dict) else line)
        elif place.startswith("address.") and isinstance(body.get("shipping_address"), dict):
            body["shipping_address"][place.split(".", 1)[1]] = odd
        elif place in ("lines", "reference"):
            body[place] = odd
        elif place == "address":
            body["shipping_address"] = odd
        elif place == "body":
            body = odd
    return body


def _plain(value):
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@hypothesis_settings(max_examples=3000, deadline=None)
@given(bodies())
def test_the_fast_path_takes_only_what_the_serializer_takes_unchanged(body):
    fast = _well_formed_order_request(body)
    if fast is None:
        return
    serializer = OrderRequestSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    assert fast == _plain(serializer.validated_data)
    assert list(fast["shipping_address"]) == list(serializer.validated_data["shipping_address"])


@pytest.mark.parametrize(
    "body",
    [
        {"lines": [{"sku": "MUG", "quantity": 1}], "shipping_address": ADDRESS},
        {
            "lines": [{"sku": "MUG", "quantity": 2}, {"sku": "TEA", "quantity": 1000}],
            "reference": "PO-7",
            "shipping_address": {**ADDRESS, "line2": "", "note": "ignored"},
        },
    ],
)
def test_an_ordinary_body_takes_the_fast_path(body):
    serializer = OrderRequestSerializer(data=body)
    assert serializer.is_valid()
    assert _well_formed_order_request(body) == _plain(serializer.validated_data)


@pytest.mark.parametrize(
    "body",
    [
        {"lines": [{"sku": " MUG ", "quantity": "2"}], "shipping_address": {**ADDRESS, "city": " Lyon "}},
        {"lines": [{"sku": "MUG", "quantity": 0}], "shipping_address": ADDRESS},
        {"lines": [], "shipping_address": ADDRESS},
    ],
)
def test_anything_else_gets_the_serializers_answer(body):
    serializer = OrderRequestSerializer(data=body)
    if serializer.is_valid():
        assert order_request_data(body) == serializer.validated_data
    else:
        with pytest.raises(ValidationError) as raised:
            order_request_data(body)
        assert raised.value.detail == serializer.errors
