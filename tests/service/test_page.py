"""The analyst page in headless Chromium (Debian's /usr/bin/chromium driven by playwright): it shows the
principal's dataset with a budget bar, and a release with its provenance."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pyiceberg.catalog import Catalog

import iceberg_privacy as ip
from iceberg_privacy.service.server import BackgroundServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.slow, pytest.mark.spark,
              pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                 reason=f"{CHROMIUM} missing: run scripts/ensure_chromium.sh (apt-get install chromium)")]


def _browser(p: Any) -> Any:
    return p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)


def test_page_shows_dataset_bar_and_release(service: BackgroundServer, svc_catalog: Catalog,
                                            tokens: dict[str, Any], spark: Any) -> None:
    from playwright.sync_api import sync_playwright

    ip.dp_histogram("conf.pv", ["country"], budget=ip.PureDP(0.1), catalog=svc_catalog, privacy_unit="user_id",
                    max_rows_per_unit=3, keys={"country": ["c0", "c1", "c2", "c3"]}, principal="alice", spark=spark)
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
            page.wait_for_function("document.getElementById('error').textContent.length > 0")
            assert "unauthorized" in page.locator("#error").inner_text()
        finally:
            browser.close()
