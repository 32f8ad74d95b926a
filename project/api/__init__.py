"""The REST API's plumbing for DRF: content negotiation, parsers, renderers, pagination, the
schema helpers and bounded lists."""
