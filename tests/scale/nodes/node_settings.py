"""Settings of the web nodes of tests/scale/nodes: the test settings (this run's database, Redis
numbers, key prefix and queues), with a real budget for the `auth` group, so that the test of the
shared rate limit has a limit to meet. The test settings lift every limit out of the suite's way."""

import os

from project.settings.test import *  # noqa: F403
from project.settings.test import RATELIMIT_AUTH

RATELIMIT_AUTH = os.environ.get("NODE_RATELIMIT_AUTH", RATELIMIT_AUTH)
