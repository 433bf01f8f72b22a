"""The demo page in a real browser: Debian's chromium, headless, driven by Playwright.

Playwright's own browser download is never used (no `playwright install`): the test points
Playwright at /usr/bin/chromium, which `.ci/run` installs with apt when it is missing.
"""

import base64
import http.client
import os
import re
import shutil

import pytest

from tests.helpers.server import ROOT, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

try:
    from playwright.sync_api import sync_playwright
except ImportError:   # pragma: no cover
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed"),
]


def test_demo_page_receives_a_push(ngxws_server):
    srv = ngxws_server(http="""
    server {
        listen 127.0.0.1:0;
        location / { root %s; index index.html; }
        location /ws { websocket; }
    }""" % os.path.join(ROOT, "html"))
    base = "http://127.0.0.1:%d/" % srv.port()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto(base, timeout=15000)
            page.wait_for_function(
                "document.getElementById('push-url').dataset.url !== undefined", timeout=15000)
            url = page.eval_on_selector("#push-url", "el => el.dataset.url")
            assert page.text_content("#state") == "open"
            curl_line = page.text_content("#curl")
            assert url in curl_line and curl_line.startswith("curl ")

            m = re.match(r"^http://([A-Za-z0-9_-]{22,})@([0-9.]+):(\d+)(/ws)$", url)
            assert m, url
            sid, host, port, path = m.groups()
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conn.request("POST", path, body="hello browser ✓".encode(),
                         headers={"Authorization": "Basic " + base64.b64encode(sid.encode() + b":").decode()})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            assert resp.status == 204

            page.wait_for_selector("#messages li.message", timeout=10000)
            assert page.text_content("#messages li.message") == "hello browser ✓"

            # and the page's own send box is echoed
            page.fill("#send-text", "typed in the page")
            page.click("button[type=submit]")
            wait_for(lambda: page.locator("#messages li").count() == 2, 10, interval=0.05,
                     what="the echo on the page")
            assert page.locator("#messages li").nth(1).text_content() == "typed in the page"
        finally:
            browser.close()
