"""The HTTP edge shared by pages and API: middleware, error views and the error envelope,
conditional requests, degraded mode, health endpoints, what a request is."""
