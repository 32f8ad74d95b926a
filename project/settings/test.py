"""Test settings: the base profile with an isolated Redis DB, queue names and key prefix.

The pool stays on (its bugs live there); only the password hasher is made fast.
"""

import os

from project.settings.dburl import redis_url_with_db

# Always the same server as `make run`, but never its database numbers, prefixes or queues.
os.environ["REDIS_URL"] = redis_url_with_db("REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), 14)
os.environ["REDIS_BROKER_DB"] = "15"
os.environ.pop("CELERY_BROKER_URL", None)
# TEST_RUN_ID keeps parallel runs on one machine apart: own queues, key prefix and test database.
TEST_RUN_ID = os.environ.get("TEST_RUN_ID", "")
os.environ["CACHE_KEY_PREFIX"] = f"stockroom-test{TEST_RUN_ID}"
os.environ["CELERY_QUEUE_PREFIX"] = f"stockroom-test{TEST_RUN_ID}"
os.environ.setdefault("DB_POOL_MAX_SIZE", "60")
os.environ.setdefault("DEBUG", "0")
# Availability exact (read every time), so a test reads what it just changed; the tests of the
# bound (tests/inventory/test_availability.py) set their own.
os.environ.setdefault("CATALOGUE_AVAILABILITY_MAX_AGE_MS", "0")
# Generous limits, so the suite (and parallel runs sharing this Redis DB) never throttles itself;
# tests of the limiter set their own rates and key prefix with the `settings` fixture.
os.environ["RATELIMIT_READ"] = "1000000/60"
os.environ["RATELIMIT_WRITE"] = "1000000/60"
os.environ["RATELIMIT_AUTH"] = "1000000/60"
os.environ["RATELIMIT_ADMIN_LOGIN"] = "1000000/60"

from project.settings.base import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Parallel test runs on one machine (several checkouts) each name their own test database.
DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}{TEST_RUN_ID}"}  # noqa: F405
