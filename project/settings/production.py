"""Production profile: the base settings hardened; passes `manage.py check --deploy`."""

import os

os.environ.setdefault("DEBUG", "0")

from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured

from project.settings.base import *  # noqa: F403
from project.settings.base import DEBUG, SECRET_KEY
from project.settings.env import env_bool, env_int, env_list, env_str

if DEBUG:
    raise ImproperlyConfigured("DEBUG=1 is not allowed with project.settings.production")
# Django's own deploy check (security.W009) as a refusal to start, plus the development default.
if (
    SECRET_KEY.startswith(("dev-only", SECRET_KEY_INSECURE_PREFIX))
    or len(SECRET_KEY) < SECRET_KEY_MIN_LENGTH
    or len(set(SECRET_KEY)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
):
    raise ImproperlyConfigured(
        f"SECRET_KEY must be set to a random value in production: at least {SECRET_KEY_MIN_LENGTH} characters,"
        f" {SECRET_KEY_MIN_UNIQUE_CHARACTERS} different ones, not starting with {SECRET_KEY_INSECURE_PREFIX!r}"
    )
# No development default here: the host names this site answers to, from the environment.
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must list this site's host names in production (comma-separated)")
# `manage.py load_demo_data` would create a superuser with the published demo password.
DEMO_DATA_ALLOWED = False

# TLS ends at the proxy in front of gunicorn, which says so in this header.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Content-Security-Policy comes from project.http.middleware.ContentSecurityPolicyMiddleware in every
# profile (see CONTENT_SECURITY_POLICY in base), so development meets the same policy.

# The profile already trusts the proxy's X-Forwarded-Proto, so there is a proxy: the client's
# address is the last X-Forwarded-For entry it appends (REMOTE_ADDR would be the proxy's, and
# everyone would share one rate-limit budget). Set 0 if clients reach gunicorn directly.
RATELIMIT_TRUSTED_PROXIES = env_int("RATELIMIT_TRUSTED_PROXIES", 1)
# Behind that proxy every client would be loopback to /metrics: the scraper brings METRICS_TOKEN,
# unless this says it is on this host with no proxy in front (project.observability.checks refuses neither).
METRICS_ALLOW_LOOPBACK = env_bool("METRICS_ALLOW_LOOPBACK", False)
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "project.mail.smtp.EmailBackend")
# Webhooks leave over TLS only: a signed body sent in clear text can be read on the way.
WEBHOOK_ALLOW_HTTP = env_bool("WEBHOOK_ALLOW_HTTP", False)
