"""psycopg_pool's pool with a ceiling on the wait between reconnection attempts.

When a connection fails, psycopg_pool tries again after 1 s, then doubles the wait after every
failure (2, 4, 8 ... s) until `reconnect_timeout` (5 minutes) ends the attempt. So after a
one-minute outage a web worker could wait most of another minute before it tried again, answering
503 while PostgreSQL was back, and a worker that took no traffic meanwhile recovered last. With
the ceiling, a worker is serving again at most `max_reconnect_delay` seconds after the database is.
"""

from psycopg_pool import ConnectionPool


class ReconnectingPool(ConnectionPool):
    def __init__(self, *args, max_reconnect_delay: float, **kwargs):
        self.max_reconnect_delay = max_reconnect_delay
        super().__init__(*args, **kwargs)

    def _add_connection(self, attempt, growing: bool = False) -> None:
        # psycopg_pool multiplies the attempt's delay by DELAY_BACKOFF after a failure, inside this
        # method, and schedules the next attempt after it: bound the delay before it is multiplied.
        if attempt is not None:
            attempt.delay = min(attempt.delay, self.max_reconnect_delay / attempt.DELAY_BACKOFF)
        super()._add_connection(attempt, growing=growing)
