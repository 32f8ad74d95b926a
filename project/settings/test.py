"""Test settings: the base profile with an isolated Redis DB, queue names and key prefix.

The pool stays on (its bugs live there); only the password hasher is made fast.
"""

import os

os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
os.environ.setdefault("REDIS_BROKER_DB", "15")
os.environ.setdefault("CACHE_KEY_PREFIX", "stockroom-test")
os.environ.setdefault("CELERY_QUEUE_PREFIX", "stockroom-test")
os.environ.setdefault("DB_POOL_MAX_SIZE", "20")
os.environ.setdefault("DEBUG", "0")

from project.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
