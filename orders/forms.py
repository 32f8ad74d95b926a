"""Forms of the shopper pages: cart changes, the checkout (address + the order it confirms), transitions."""

import uuid

from django import forms
from django.conf import settings
from django.core import signing

from inventory.models import SKU_VALIDATOR
from orders.cart import is_quantity, is_sku

BASKET_SALT = "stockroom.checkout.basket"
# A checkout page older than this is refused (prices and stock may have moved a lot since).
BASKET_MAX_AGE_SECONDS = 2 * 60 * 60


def quantity_field(**kwargs) -> forms.IntegerField:
    message = f"Enter a whole number from 1 to {settings.ORDER_MAX_QUANTITY}."
    return forms.IntegerField(
        min_value=1,
        max_value=settings.ORDER_MAX_QUANTITY,
        error_messages={"invalid": message, "min_value": message, "max_value": message, "required": message},
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "class": "qty"}),
        **kwargs,
    )


class CartAddForm(forms.Form):
    sku = forms.CharField(max_length=64, validators=[SKU_VALIDATOR], widget=forms.HiddenInput)
    quantity = quantity_field(initial=1)


class CartSetForm(forms.Form):
    sku = forms.CharField(max_length=64, validators=[SKU_VALIDATOR], widget=forms.HiddenInput)
    quantity = quantity_field()


class CartRemoveForm(forms.Form):
    sku = forms.CharField(max_length=64, validators=[SKU_VALIDATOR], widget=forms.HiddenInput)


def sign_basket(lines: list[tuple[str, int]]) -> str:
    return signing.dumps([[sku, quantity] for sku, quantity in lines], salt=BASKET_SALT, compress=True)


def unsign_basket(token: str) -> list[tuple[str, int]] | None:
    """The lines a checkout page showed, or None if the token was changed, is too old or makes no sense."""
    try:
        value = signing.loads(token, salt=BASKET_SALT, max_age=BASKET_MAX_AGE_SECONDS)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= settings.ORDER_MAX_LINES:
        return None
    lines = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and is_sku(item[0]) and is_quantity(item[1])):
            return None
        lines.append((item[0], item[1]))
    if len({sku for sku, _ in lines}) != len(lines):
        return None
    return lines


class CheckoutForm(forms.Form):
    """The shipping address, plus two hidden fields written when the page was rendered:

    - `idempotency_key`: a fresh UUID per rendered page, so submitting the same page twice
      (double click, reload of the POST, a retry after a timeout) places one order;
    - `basket`: the lines the page showed, signed, so the order is exactly what the shopper
      confirmed even if the cart changes in another tab meanwhile.
    """

    name = forms.CharField(max_length=100, label="Full name", widget=forms.TextInput(attrs={"autocomplete": "name"}))
    line1 = forms.CharField(
        max_length=200, label="Address", widget=forms.TextInput(attrs={"autocomplete": "address-line1"})
    )
    line2 = forms.CharField(
        max_length=200,
        required=False,
        label="Address, second line",
        widget=forms.TextInput(attrs={"autocomplete": "address-line2"}),
    )
    city = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"autocomplete": "address-level2"}))
    postal_code = forms.CharField(
        max_length=20, label="Postal code", widget=forms.TextInput(attrs={"autocomplete": "postal-code"})
    )
    country = forms.RegexField(
        regex=r"^[A-Z]{2}$",
        max_length=2,
        min_length=2,
        help_text="Two letters, like GB, FR or US.",
        error_messages={"invalid": "Two letters (an ISO 3166-1 code), like GB, FR or US."},
        widget=forms.TextInput(attrs={"autocomplete": "country", "class": "short"}),
    )
    idempotency_key = forms.UUIDField(widget=forms.HiddenInput)
    basket = forms.CharField(max_length=20_000, widget=forms.HiddenInput)

    ADDRESS_FIELDS = ("name", "line1", "line2", "city", "postal_code", "country")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.is_bound:
            data = self.data.copy()
            country = data.get("country")
            if isinstance(country, str):
                data["country"] = country.strip().upper()
            self.data = data

    def clean_basket(self) -> list[tuple[str, int]]:
        lines = unsign_basket(self.cleaned_data["basket"])
        if lines is None:
            raise forms.ValidationError("This checkout page is out of date.", code="stale")
        return lines

    def address(self) -> dict:
        return {field: self.cleaned_data[field] for field in self.ADDRESS_FIELDS}

    @staticmethod
    def fresh_key() -> str:
        return str(uuid.uuid4())


class TransitionForm(forms.Form):
    """Pay or cancel: carries the order version the page showed, so a stale page is refused."""

    version = forms.IntegerField(min_value=1, max_value=2**31 - 1, widget=forms.HiddenInput)
