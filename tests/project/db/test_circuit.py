import pytest

from project.db.circuit import CircuitBreaker, CircuitOpen


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def breaker(clock):
    return CircuitBreaker("db", threshold=3, cooldown=5, clock=clock)


def test_the_circuit_opens_after_the_threshold_and_fails_fast(breaker):
    for _ in range(2):
        breaker.before_attempt()
        breaker.failed()
    assert breaker.state == "closed"

    breaker.before_attempt()
    breaker.failed()

    assert breaker.state == "open"
    with pytest.raises(CircuitOpen):
        breaker.before_attempt()


def test_a_success_resets_the_count(breaker):
    breaker.failed()
    breaker.failed()
    breaker.succeeded()
    breaker.failed()

    assert breaker.state == "closed"


def test_half_open_lets_exactly_one_probe_through(breaker, clock):
    for _ in range(3):
        breaker.failed()
    clock.now += 5

    assert breaker.state == "half_open"
    breaker.before_attempt()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_attempt()  # everyone else still fails fast

    breaker.succeeded()
    assert breaker.state == "closed"
    breaker.before_attempt()


def test_a_failed_probe_opens_the_circuit_again(breaker, clock):
    for _ in range(3):
        breaker.failed()
    clock.now += 5
    breaker.before_attempt()

    breaker.failed()

    assert breaker.state == "open"
    clock.now += 4
    with pytest.raises(CircuitOpen):
        breaker.before_attempt()
    clock.now += 1
    breaker.before_attempt()
