"""Logs, metrics and profiling: request ids, the /metrics endpoint, request, statement, pool and
task metrics, slow queries, the profiling middleware. Apps define their own metrics."""
