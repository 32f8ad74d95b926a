"""Plain value checks every service and task shares (their callers phrase the error)."""


def is_whole_number(value, *, minimum: int | None = None, maximum: int | None = None) -> bool:
    """Whether `value` is an int (a bool is not one, though Python says it is) within the bounds."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
