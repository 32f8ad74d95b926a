"""Order transitions as the admin offers them: the table of moves, the change page's form, and the
words staff read when a move is refused.

The lifecycle itself lives in `orders.services`; `from_statuses` here only decides which buttons
an order's page shows. The service re-checks everything under the order's row lock, so a button
shown from a stale page is refused there, never applied over someone else's change.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django import forms

from orders import services
from orders.models import Order
from project.errors import DomainError, PreconditionFailed

Status = Order.Status
LOST_VERSION = "This page lost the order's version; reload it and try again."


@dataclass(frozen=True)
class OrderTransition:
    name: str
    label: str  # the button and the action: "Pay"
    done: str  # what happened to the order: "paid"
    from_statuses: frozenset[str]
    run: Callable[..., Order]  # run(order_id=, actor=, expected_version=) -> the moved order


def _pay(*, order_id: int, actor, expected_version: int | None) -> Order:
    # Payment is simulated and records no actor; the admin's LogEntry says who pressed the button.
    return services.order_pay(order_id=order_id, expected_version=expected_version)


def _fulfil(*, order_id: int, actor, expected_version: int | None) -> Order:
    return services.order_fulfil(order_id=order_id, actor=actor, expected_version=expected_version)


def _cancel(*, order_id: int, actor, expected_version: int | None) -> Order:
    return services.order_cancel(order_id=order_id, actor=actor, expected_version=expected_version)


def _return(*, order_id: int, actor, expected_version: int | None) -> Order:
    return services.order_return(order_id=order_id, actor=actor, expected_version=expected_version)


ORDER_TRANSITIONS: dict[str, OrderTransition] = {
    t.name: t
    for t in [
        OrderTransition("pay", "Pay", "paid", frozenset({Status.RESERVED}), _pay),
        OrderTransition("fulfil", "Fulfil", "fulfilled", frozenset({Status.PAID, Status.PARTIALLY_FULFILLED}), _fulfil),
        OrderTransition("cancel", "Cancel", "cancelled", frozenset({Status.RESERVED, Status.PAID}), _cancel),
        OrderTransition(
            "return", "Return", "returned", frozenset({Status.FULFILLED, Status.PARTIALLY_RETURNED}), _return
        ),
    ]
}


def transitions_offered(order: Order, *, now: datetime) -> list[OrderTransition]:
    """The moves worth offering for `order` as the page shows it (the service still has the last word).

    Paying is not offered once the reservation's time has run out, even before the sweep expires it.
    """
    offered = [t for t in ORDER_TRANSITIONS.values() if order.status in t.from_statuses]
    if order.expires_at <= now:
        offered = [t for t in offered if t.name != "pay"]
    return offered


def refusal_message(number: str, transition: OrderTransition, exc: DomainError) -> str:
    """One refused move, named with its order and the service's reason."""
    if isinstance(exc, PreconditionFailed):
        current = exc.extra.get("current_version")
        now = f" (it is now at version {current})" if current is not None else ""
        return (
            f"{number} was not {transition.done}: it was changed by someone else since this page was loaded{now}. "
            "Nothing was done; check the order as it is now and try again."
        )
    return f"{number} was not {transition.done}: {exc.detail}"


class OrderTransitionForm(forms.Form):
    """The buttons on an order's page: which move, and the version the page showed.

    `expected_version` goes to the service, which refuses the move (PreconditionFailed) when the
    order changed since the page was loaded, instead of acting on what the user no longer sees.
    """

    transition = forms.ChoiceField(choices=[(t.name, t.label) for t in ORDER_TRANSITIONS.values()])
    expected_version = forms.IntegerField(
        widget=forms.HiddenInput,
        min_value=1,
        error_messages={"required": LOST_VERSION, "invalid": LOST_VERSION, "min_value": LOST_VERSION},
    )

    def chosen(self) -> OrderTransition:
        return ORDER_TRANSITIONS[self.cleaned_data["transition"]]
