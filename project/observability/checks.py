"""System checks of the platform's own settings (registered in ProjectConfig.ready)."""

from django.conf import settings
from django.core.checks import Error, Warning


def metrics_access(app_configs, **kwargs) -> list:
    """/metrics must be readable by someone, and not by everyone (DESIGN.md §6): with
    METRICS_TOKEN, or from loopback where METRICS_ALLOW_LOOPBACK says the scraper is on this host
    with no proxy in front. Neither is an error (production's default until one is chosen); loopback
    with a proxy counted in front (RATELIMIT_TRUSTED_PROXIES) is a warning, since that proxy's
    clients all arrive from loopback (the view refuses requests with forwarding headers too)."""
    if not settings.METRICS_TOKEN and not settings.METRICS_ALLOW_LOOPBACK:
        return [
            Error(
                "/metrics has no way in: set METRICS_TOKEN (the scraper sends 'Authorization: Bearer "
                "<token>'), or METRICS_ALLOW_LOOPBACK=1 if the scraper runs on this host with no proxy "
                "in front.",
                id="stockroom.E001",
            )
        ]
    if settings.METRICS_ALLOW_LOOPBACK and settings.RATELIMIT_TRUSTED_PROXIES > 0:
        return [
            Warning(
                "METRICS_ALLOW_LOOPBACK is on while RATELIMIT_TRUSTED_PROXIES says a proxy is in front: "
                "a proxy on this host makes its clients loopback.",
                hint="Set METRICS_TOKEN and METRICS_ALLOW_LOOPBACK=0, or RATELIMIT_TRUSTED_PROXIES=0 "
                "if clients reach gunicorn directly.",
                id="stockroom.W001",
            )
        ]
    return []
