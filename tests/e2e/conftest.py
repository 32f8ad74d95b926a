"""Browser tests: Playwright driving Debian's chromium against pytest-django's live server.

`make test` installs chromium (the Makefile's `browser` target); Playwright's own browser
download is not used. Playwright's sync API keeps an asyncio loop running in this thread, so
Django would refuse ORM calls made from the tests; DJANGO_ALLOW_ASYNC_UNSAFE is set for this
package only, while the browser is up, and put back afterwards.
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from inventory import services as stock
from tests.factories import ProductFactory, WarehouseFactory

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="package")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="package", autouse=True)
def _fresh_screenshots() -> None:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture
def page(browser, live_server):
    """A fresh browser (its own cookies) at desktop size, talking to the live server."""
    context = browser.new_context(viewport=DESKTOP, base_url=live_server.url)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


@pytest.fixture
def other_page(browser, live_server):
    context = browser.new_context(viewport=DESKTOP, base_url=live_server.url)
    context.set_default_timeout(15_000)
    tab = context.new_page()
    yield tab
    context.close()


def shoot(page, name: str) -> None:
    """Full-page screenshots of what the browser shows now, at phone and desktop width."""
    size = page.viewport_size
    for label, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(viewport)
        page.screenshot(path=SCREENSHOTS / f"{name}-{label}.png", full_page=True)
    page.set_viewport_size(size)


@pytest.fixture
def shop(transactional_db):
    """A small shop: three products with stock in one warehouse, and enough others for two pages."""
    WarehouseFactory(code="MAIN", priority=1)
    ProductFactory(sku="MUG", name="Blue mug", price="12.50", description="A sturdy blue mug.\n\nHolds 350 ml.")
    ProductFactory(sku="TEA", name="Green tea", price="4.00", description="Loose-leaf sencha, 100 g.")
    ProductFactory(sku="POT", name="Teapot", price="30.00")
    for n in range(25):
        ProductFactory(sku=f"THING-{n:02d}", name=f"Thing {n:02d}", price="1.00")
    stock.stock_receive(sku="MUG", warehouse_code="MAIN", quantity=10)
    stock.stock_receive(sku="TEA", warehouse_code="MAIN", quantity=5)
    stock.stock_receive(sku="POT", warehouse_code="MAIN", quantity=2)
    stock.stock_receive(sku="THING-00", warehouse_code="MAIN", quantity=3)
