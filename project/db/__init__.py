"""PostgreSQL and Redis: transactions and bounded retries, advisory locks, the database backend
(pool, connection check, circuit breaker), the replica router, Redis connections."""
