from project import errors
from project.errors import DomainError
from project.errors import IdempotencyKeyReused as IdempotencyKeyReused  # the platform's, as orders raise it


class InvalidTransition(DomainError):
    code = "invalid_transition"
    default_detail = "This order cannot make that move from its current status."


class ReservationExpired(DomainError):
    code = "reservation_expired"
    default_detail = "The time to pay for this order has run out; its stock was released."


class RequestInFlight(DomainError):
    code = "request_in_flight"
    default_detail = "A request with this Idempotency-Key is still being processed; retry shortly."


class IdempotencyKeyRequired(errors.IdempotencyKeyRequired):
    default_detail = "Send an Idempotency-Key header (a unique string per order, up to 255 characters)."


class NotShippable(DomainError):
    code = "not_shippable"
    default_detail = "These units cannot be shipped: not that many are left to ship from there."


class NotReturnable(DomainError):
    code = "not_returnable"
    default_detail = "These units cannot be returned: not that many were shipped and not yet returned."
