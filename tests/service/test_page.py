"""The analyst page in headless Chromium (Debian's /usr/bin/chromium driven by playwright): it shows the
principal's dataset with a budget bar, and a release with its provenance."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pyiceberg.catalog import Catalog

from iceberg_privacy.service.server import BackgroundServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.slow, pytest.mark.spark,
              pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                 reason=f"{CHROMIUM} missing: run scripts/ensure_chromium.sh (apt-get install chromium)")]


def _browser(p: Any) -> Any:
    return p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)


def _until(check: Any, timeout: float = 60.0) -> None:
    """Poll ``check`` (the page's CSP forbids the string eval that wait_for_function would need)."""
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the page did not update"
        time.sleep(0.1)


def test_page_shows_dataset_bar_and_release(service: BackgroundServer, svc_catalog: Catalog,
                                            tokens: dict[str, Any], spark: Any) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = browser.new_page()
            page.goto(service.url + "/")
            assert page.locator("#who").inner_text() == "no token"
            page.fill("#token", tokens["alice"])
            page.click("#login button[type=submit]")
            page.wait_for_selector("tr.dataset")
            assert "signed in as alice" in page.locator("#who").inner_text()
            row = page.locator("tr.dataset").first
            assert "conf.pv" in row.inner_text() and "country string" in row.inner_text()
            assert float(row.locator("[role=meter]").get_attribute("aria-valuenow")) == pytest.approx(0.5)
            assert page.locator("tr.release").count() == 0
            # ask a DP query from the page: the answer, a release, and a shorter bar
            page.fill("#sql", "SELECT country, COUNT(*) AS n FROM conf.pv GROUP BY country")
            page.fill("#epsilon", "0.1")
            page.click("#query button[type=submit]")
            page.wait_for_selector("#answer-rows", timeout=300_000)
            assert page.locator("#answer-rows tr").count() == 5  # header + four countries
            assert "spent epsilon=0.1" in page.locator("#answer").inner_text()
            _until(lambda: float(page.locator("tr.dataset [role=meter]").first.get_attribute("aria-valuenow")) < 0.5)
            row = page.locator("tr.dataset").first
            meter = row.locator("[role=meter]")
            assert float(meter.get_attribute("aria-valuenow")) == pytest.approx(0.4)
            assert float(meter.get_attribute("aria-valuemax")) == pytest.approx(0.5)
            width = row.locator(".bar > span").evaluate("e => e.style.width")
            assert float(width.rstrip("%")) == pytest.approx(80.0)
            page.wait_for_selector("tr.release")
            release = page.locator("tr.release").first.inner_text()
            snap = svc_catalog.load_table("conf.pv").current_snapshot().snapshot_id
            assert "released" in release and f"conf.pv@{snap}" in release and "epsilon=0.1" in release
            assert '"released_at"' in release  # the provenance of the release snapshot
            assert page.evaluate("sessionStorage.getItem('iceberg-privacy-token')") == tokens["alice"]
            assert page.locator("#error").inner_text() == ""
            # a wrong token shows the refusal, not data
            page.fill("#token", "ipt_000000000000." + "A" * 43)
            page.click("#login button[type=submit]")
            _until(lambda: page.locator("#error").inner_text() != "")
            assert "unauthorized" in page.locator("#error").inner_text()
        finally:
            browser.close()
