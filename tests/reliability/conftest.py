import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_http_client_log():
    """httpx logs every request at INFO: thousands of lines a test here, drowning a failure's report."""
    logger = logging.getLogger("httpx")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)
