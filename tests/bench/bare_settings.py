"""The bare ceiling: the production profile with no middleware at all."""

from project.settings.production import *  # noqa: F403

MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.bench.bare_urls"
