"""Settings of the worker processes of the crash tests: the test settings, with kombu's sweep for
unacknowledged messages run every second, so a message whose worker died is delivered again as
soon as the short CELERY_VISIBILITY_TIMEOUT the test sets has passed (kombu's default sweep runs
about every 100 s, sized for the production visibility timeout of an hour)."""

from project.settings.test import *  # noqa: F403

CELERY_BROKER_TRANSPORT_OPTIONS = {
    **CELERY_BROKER_TRANSPORT_OPTIONS,  # noqa: F405
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
