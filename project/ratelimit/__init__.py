"""Rate limiting in Redis (GCRA, one script call per request) and the session middleware it
reads users from."""
