"""The live page at /ui, driven in a real headless Chromium against a real server: it streams
the text /v1/sample gives, and with an API key it asks for the key and sends it."""

from __future__ import annotations

import pytest

from conftest import needs, run_charnn

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
playwright = pytest.importorskip("playwright.sync_api")

from test_serve import server  # noqa: E402  (the same real server the API tests start)

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def chromium():
    path = needs("chromium")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def generate_on_the_page(page, url: str, prime: str, seed: int) -> str:
    page.fill("#prime", prime)
    page.fill("#seed", str(seed))
    page.click("#generate")
    page.wait_for_selector("#output[data-done='1']", timeout=60_000)
    return page.inner_text("#output")


def test_the_page_streams_what_the_api_gives(trained, chromium):
    with server(trained[2]) as (url, _):
        page = chromium.new_page()
        page.goto(f"{url}/ui")
        page.locator("#title", has_text="corpus-lstm").wait_for()  # the served model, by name
        assert page.inner_text("#title") == "corpus-lstm/best.pt"
        page.eval_on_selector("#length", "el => { el.value = '300'; }")
        shown = generate_on_the_page(page, url, "The ", seed=3)
        api = httpx.post(f"{url}/v1/sample", timeout=60, json={
            "prime": "The ", "seed": 3, "length": 300, "temperature": 0.8, "top_p": 1.0,
            "unknown": "skip"}).json()  # fmt: skip
        assert shown == "The " + api["samples"][0]["text"]
        assert page.inner_text("#status").startswith("done: 300 characters (length), seed 3")


def test_with_an_api_key_the_page_asks_for_it_and_sends_it(trained, chromium):
    with server(trained[2], env_extra={"CHARNN_API_KEY": "s3cret"}) as (url, _):
        page = chromium.new_page()
        page.goto(f"{url}/ui")  # the page itself needs no key: it holds no data
        page.wait_for_selector("#keyrow:not([hidden])")
        page.fill("#key", "s3cret")
        page.dispatch_event("#key", "change")
        page.locator("#title", has_text="corpus-lstm").wait_for()  # described, with the key
        shown = generate_on_the_page(page, url, "The ", seed=5)
        assert shown.startswith("The ") and len(shown) > 100
        assert httpx.get(f"{url}/v1/model", timeout=30).status_code == 403  # still guarded


def test_the_page_is_served_beside_the_torch_rnn_server_routes(trained):
    proc = run_charnn("serve", "--help")
    assert proc.returncode == 0 and "/ui" in proc.stdout
