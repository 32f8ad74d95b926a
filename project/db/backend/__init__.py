"""The database backend (`ENGINE = "project.db.backend"`): django-prometheus's instrumented
wrapper, a pool whose reconnections stay close together, a connection check without a round trip."""
