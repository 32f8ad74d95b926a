"""Shopper pages for the cart, checkout and orders: parse the form, call one service, say what happened.

Every refusal becomes a message or a form error on the page the shopper was on; the cart and
what they typed are kept. Stock is decided only by orders.services (never by the cached
availability these pages show).
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from inventory.errors import InsufficientStock
from inventory.selectors import next_arrival
from orders import selectors, services
from orders.cart import Cart
from orders.errors import IdempotencyKeyReused, InvalidTransition, RequestInFlight, ReservationExpired
from orders.forms import CartAddForm, CartRemoveForm, CartSetForm, CheckoutForm, TransitionForm, sign_basket
from orders.models import Order, Shipment
from project.api.idempotency import request_fingerprint
from project.errors import DomainError, InvalidInput, LockTimeout, PreconditionFailed

ORDERS_PER_PAGE = 20
# Idempotency keys from the checkout page live in their own namespace, apart from API clients' keys.
CHECKOUT_KEY_PREFIX = "checkout-page:"


def _report_cart_problems(request, cart: Cart) -> None:
    for problem in cart.problems:
        messages.warning(request, problem)
    cart.problems.clear()


def _form_errors(form) -> str:
    return " ".join(str(error) for errors in form.errors.values() for error in errors)


def _back_to(request, fallback: str) -> str:
    """Where a cart form came from (product page or cart), if it is one of ours."""
    target = request.POST.get("next", "")
    if target.startswith("/") and url_has_allowed_host_and_scheme(target, allowed_hosts=None):
        return target
    return fallback


# --- cart -----------------------------------------------------------------------------------


@require_GET
def cart_view(request):
    cart = Cart(request.session)
    lines = cart.lines()
    _report_cart_problems(request, cart)
    return render(
        request,
        "orders/cart.html",
        {
            "lines": lines,
            "total": sum((line.total for line in lines), 0),
            "currency": settings.SHOP_CURRENCY,
            "max_quantity": settings.ORDER_MAX_QUANTITY,
        },
    )


@require_POST
def cart_add(request):
    cart = Cart(request.session)
    _report_cart_problems(request, cart)
    form = CartAddForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Nothing was added: {_form_errors(form)}")
        return redirect(_back_to(request, "cart"))
    sku, quantity = form.cleaned_data["sku"], form.cleaned_data["quantity"]
    refused = cart.add(sku, quantity)
    if refused:
        messages.error(request, f"Nothing was added: {refused}")
        return redirect(_back_to(request, "cart"))
    messages.success(request, f"Added {quantity} of {sku} to your cart.")
    return redirect(_back_to(request, "cart"))


@require_POST
def cart_set(request):
    cart = Cart(request.session)
    _report_cart_problems(request, cart)
    form = CartSetForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Your cart was not changed: {_form_errors(form)}")
        return redirect("cart")
    refused = cart.set(form.cleaned_data["sku"], form.cleaned_data["quantity"])
    if refused:
        messages.error(request, f"Your cart was not changed: {refused}")
    else:
        messages.success(request, f"{form.cleaned_data['sku']}: quantity now {form.cleaned_data['quantity']}.")
    return redirect("cart")


@require_POST
def cart_remove(request):
    cart = Cart(request.session)
    _report_cart_problems(request, cart)
    form = CartRemoveForm(request.POST)
    if form.is_valid() and cart.remove(form.cleaned_data["sku"]):
        messages.success(request, f"Removed {form.cleaned_data['sku']} from your cart.")
    else:
        messages.error(request, "That product is not in your cart.")
    return redirect("cart")


@require_POST
def cart_empty(request):
    Cart(request.session).empty()
    messages.success(request, "Your cart is empty.")
    return redirect("cart")


# --- checkout -------------------------------------------------------------------------------


def _insufficient_message(items: list[dict], names: dict[str, str]) -> str:
    parts = []
    for item in items:
        sku = item.get("sku", "?")
        label = f"{names[sku]} ({sku})" if sku in names else sku
        available = max(int(item.get("available") or 0), 0)
        left = "none left" if available == 0 else f"only {available} left"
        parts.append(f"{label}: you asked for {item.get('requested')}, {left}")
    return "Not enough stock, nothing was reserved. " + "; ".join(parts) + ". Change the quantities in your cart."


def _invalid_message(error: DomainError) -> str:
    details = []

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif value:
            details.append(str(value))

    walk(error.fields)
    return " ".join(details) or error.detail


def _render_checkout(request, cart: Cart, form: CheckoutForm | None = None, status: int = 200):
    lines = cart.lines()
    _report_cart_problems(request, cart)
    if not lines:
        messages.info(request, "Your cart is empty: add something before checking out.")
        return redirect("cart")
    basket = sign_basket([(line.sku, line.quantity) for line in lines])
    fresh = {"idempotency_key": CheckoutForm.fresh_key(), "basket": basket}
    if form is None:
        form = CheckoutForm(initial={"name": request.user.full_name, **fresh})
    else:
        # The page shown again is a new page: a new key (the old one may hold a stored refusal)
        # and the cart as it is now. What the shopper typed stays.
        data = form.data.copy()
        for name, value in fresh.items():
            data[name] = value  # replace (QueryDict.update would append)
        form = CheckoutForm(data)
        # What the shopper typed is judged again (no field's check depends on another or on the
        # database): the same errors on the same fields, and none on the hidden fields, whose new
        # values are valid (their old errors were said in a message).
        form.is_valid()
    return render(
        request,
        "orders/checkout.html",
        {
            "form": form,
            "lines": lines,
            "total": sum((line.total for line in lines), 0),
            "currency": settings.SHOP_CURRENCY,
            "minutes": settings.ORDER_RESERVATION_MINUTES,
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def checkout(request):
    cart = Cart(request.session)
    if request.method == "GET":
        return _render_checkout(request, cart)

    form = CheckoutForm(request.POST)
    if not form.is_valid():
        if "basket" in form.errors or "idempotency_key" in form.errors:
            messages.error(
                request, "This checkout page was out of date or altered. Please check it and place the order again."
            )
        return _render_checkout(request, cart, form, status=400)

    lines = form.cleaned_data["basket"]
    address = form.address()
    key = f"{CHECKOUT_KEY_PREFIX}{form.cleaned_data['idempotency_key']}"
    names = {line.sku: line.name for line in cart.lines()}
    try:
        result = services.order_place(
            user=request.user,
            lines=[services.OrderLineRequest(sku, quantity) for sku, quantity in lines],
            shipping_address=address,
            idempotency_key=key,
            # The same page submitted twice carries the same basket and address: one order.
            fingerprint=request_fingerprint("POST", request.path, {"lines": lines, "shipping_address": address}),
            render=lambda order, lines: {"number": order.number},
        )
    except InsufficientStock as error:
        messages.error(request, _insufficient_message(error.items, names))
        return _render_checkout(request, cart, form, status=409)
    except IdempotencyKeyReused:
        messages.error(request, "This checkout page was already used for another order. Please check it and try again.")
        return _render_checkout(request, cart, form, status=422)
    except RequestInFlight:
        messages.info(request, "Your order is being placed; it will appear here in a moment.")
        return redirect("order-list")
    except LockTimeout:
        messages.error(request, "The shop is very busy right now and nothing was reserved. Please submit again.")
        return _render_checkout(request, cart, form, status=503)
    except InvalidInput as error:
        messages.error(request, f"The order could not be placed: {_invalid_message(error)}")
        return _render_checkout(request, cart, form, status=400)

    if result.status != 201:  # the first submission of this page was refused; say why again
        error = result.body.get("error", {}) if isinstance(result.body, dict) else {}
        if error.get("code") == "insufficient_stock":
            messages.error(request, _insufficient_message(error.get("items") or [], names))
        else:
            messages.error(request, f"The order could not be placed: {error.get('detail', 'refused')}")
        return _render_checkout(request, cart, form, status=result.status)

    number = result.body["number"]
    if result.replayed:
        messages.info(request, f"Order {number} was already placed from this page; here it is.")
    else:
        cart.remove_all(sku for sku, _ in lines)
        messages.success(
            request,
            f"Order {number} is placed and its items are reserved for {settings.ORDER_RESERVATION_MINUTES} minutes.",
        )
    return redirect("order-detail", number=number)


# --- orders ---------------------------------------------------------------------------------


@login_required
@require_GET
def order_list(request):
    # Staff see everyone's orders in the admin; here, like everyone, only their own.
    orders = selectors.order_list(user=request.user).filter(user=request.user)
    page = Paginator(orders, ORDERS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "orders/order_list.html", {"page": page, "orders": page.object_list})


def _order_or_404(request, number: str) -> Order:
    order = selectors.order_for(user=request.user, number=number)
    if order is None:
        raise Http404("No such order.")
    return order


STILL_SHIPPING = {Order.Status.PAID, Order.Status.PARTIALLY_FULFILLED}


@login_required
@require_GET
def order_detail(request, number: str):
    order = _order_or_404(request, number)
    now = timezone.now()
    awaiting_payment = order.status == Order.Status.RESERVED and order.expires_at > now
    seconds_left = int((order.expires_at - now).total_seconds()) if awaiting_payment else 0
    progress = selectors.shipping_progress(order_id=order.pk).values()
    nothing_shipped = not any(line.shipped for line in progress)
    # Units sold beyond the shelf still waiting for stock, with the date it is expected.
    waiting = {line.line_id: line.backordered for line in progress if line.backordered}
    lines = list(order.lines.all())
    for line in lines:
        line.backordered = waiting.get(line.pk, 0)
        line.expected = next_arrival(sku=line.product.sku) if line.backordered else None
    return render(
        request,
        "orders/order_detail.html",
        {
            "order": order,
            "lines": lines,
            "awaiting_payment": awaiting_payment,
            "time_ran_out": order.status == Order.Status.RESERVED and not awaiting_payment,
            "minutes_left": seconds_left // 60,
            "seconds_left": seconds_left % 60,
            # Parcels on their way; pending ones are counted per line below as "being prepared".
            "parcels": selectors.order_shipments(order_id=order.pk).filter(status=Shipment.Status.SHIPPED),
            # Ordered minus shipped, while the order is still being shipped (not before it is paid,
            # not after it is cancelled).
            "to_come": [line for line in progress if line.shipped < line.ordered]
            if order.status in STILL_SHIPPING
            else [],
            "returns": selectors.order_returns(order_id=order.pk),
            # An unpaid order past its time is left to the expiry sweep, not offered for cancelling;
            # once a parcel has left, the order can no longer be cancelled (only returned).
            "can_cancel": awaiting_payment or (order.status == Order.Status.PAID and nothing_shipped),
        },
    )


def _transition(request, number: str, *, verb: str, run) -> object:
    order = _order_or_404(request, number)
    form = TransitionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "This page was out of date or altered; here is the order as it is now.")
        return redirect("order-detail", number=order.number)
    try:
        run(order=order, expected_version=form.cleaned_data["version"])
    except ReservationExpired:
        messages.error(
            request,
            f"The time to pay for order {order.number} has run out, so its items were released. "
            "Add them to your cart again to order them.",
        )
    except PreconditionFailed:
        messages.error(request, f"Order {order.number} changed since this page was shown; here it is as it is now.")
    except InvalidTransition:
        messages.error(request, f"Order {order.number} can no longer be {verb} (it is {order.status}).")
    except LockTimeout:
        messages.error(request, "The shop is very busy right now and nothing changed. Please try again.")
    return redirect("order-detail", number=order.number)


@login_required
@require_POST
def order_pay(request, number: str):
    def run(*, order, expected_version):
        services.order_pay(order_id=order.pk, expected_version=expected_version)
        messages.success(request, f"Thank you: order {order.number} is paid (payment is simulated).")

    return _transition(request, number, verb="paid", run=run)


@login_required
@require_POST
def order_cancel(request, number: str):
    def run(*, order, expected_version):
        services.order_cancel(order_id=order.pk, actor=request.user, expected_version=expected_version)
        messages.success(request, f"Order {order.number} is cancelled and its items are back in stock.")

    return _transition(request, number, verb="cancelled", run=run)


@login_required
@require_POST
def order_reorder(request, number: str):
    """Put an order's lines back in the cart (after its time to pay ran out, say)."""
    order = _order_or_404(request, number)
    cart = Cart(request.session)
    refused = []
    for line in order.lines.all():
        reason = cart.add(line.product.sku, line.quantity)
        if reason:
            refused.append(f"{line.product.sku}: {reason}")
    _report_cart_problems(request, cart)
    if refused:
        messages.warning(request, "Some lines could not be added. " + " ".join(refused))
    else:
        messages.success(request, f"The items of order {order.number} are in your cart again.")
    return redirect("cart")
