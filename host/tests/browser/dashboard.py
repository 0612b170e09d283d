"""The dashboard in a real browser: Debian's chromium, driven by Playwright.

Usage: dashboard.py URL TOKEN SCREENSHOT_DIR CHROMIUM

Against a `sigil up` that runs the example actors, offers the `publish-markdown` and
`broken` workflows, and has TOKEN as its admin token. Exits non-zero, saying what was
wrong, when the dashboard does not behave; leaves screenshots in SCREENSHOT_DIR.
"""

import json
import pathlib
import re
import sys

from playwright.sync_api import expect, sync_playwright

URL, TOKEN, OUT, CHROMIUM = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), sys.argv[4]
OUT.mkdir(parents=True, exist_ok=True)
expect.set_options(timeout=20_000)


def shot(page, name):
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


def run_checks(page, errors):
    # Overview: the host and its providers; live events connected.
    page.goto(URL)
    expect(page.locator("#host-name")).to_have_text("dash-host")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.get_by_role("heading", name="Hosts (1)")).to_be_visible()
    expect(page.locator("article[aria-label='host dash-host']")).to_contain_text("blobs ✓")

    # Actors: each example actor as a signed identity card.
    page.get_by_role("link", name="Actors", exact=True).click()
    for name in ["markdown", "blobstep", "notify"]:
        expect(page.locator(f"article[aria-label='actor {name}']")).to_be_visible()
    card = page.locator("article[aria-label='actor blobstep']")
    expect(card).to_contain_text("signed by A")
    expect(card).to_contain_text("wasmcloud:blobstore")
    expect(card.locator(".badge")).to_have_text("valid")
    # Without the token, changes are offered but disabled.
    expect(card.get_by_role("button", name="Stop")).to_be_disabled()

    # A change needs the token: the API refuses one without it, even from the page.
    refused = page.evaluate(
        "fetch('/v1/workflows/publish-markdown/runs', {method: 'POST', body: '{}',"
        " headers: {'content-type': 'application/json'}}).then(r => r.status)"
    )
    assert refused == 401, f"a run started without the token answered {refused}"
    page.get_by_role("link", name="Runs", exact=True).click()
    start = page.get_by_role("button", name="Start publish-markdown…")
    expect(start).to_be_disabled()

    # A wrong token is refused; the right one enables the changes.
    page.get_by_role("button", name="Sign in to make changes").click()
    page.fill("#token-input", "not-the-token")
    page.locator("#token-form button[type=submit]").click()
    expect(page.locator("#token-error")).to_be_visible()
    page.fill("#token-input", TOKEN)
    page.locator("#token-form button[type=submit]").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(start).to_be_enabled()

    # Start the example workflow with an input, and watch its graph reach succeeded
    # without reloading the page.
    page.evaluate("window.__sameDocument = true")
    start.click()
    page.fill("#input-markdown", "# Hello from the *dashboard*")
    page.locator("#start-form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"#/runs/[0-9a-f]+$"))
    for step in ["render", "store", "announce"]:
        expect(page.locator(f"g.node[data-step='{step}']")).to_have_class("node succeeded")
    expect(page.locator("#run-status")).to_contain_text("succeeded")
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    shot(page, "run-graph")

    # A step's input and output, opened with the keyboard.
    page.locator("g.node[data-step='render']").focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#step-dialog")
    expect(dialog).to_contain_text("Hello from the *dashboard*")
    expect(dialog).to_contain_text("<em>dashboard</em>")
    page.keyboard.press("Escape")

    # A failing run: its failed step shows the error.
    page.get_by_role("link", name="Runs", exact=True).click()
    page.get_by_role("button", name="Start broken…").click()
    page.locator("#start-form button[type=submit]").click()
    failed = page.locator("g.node[data-step='fails']")
    expect(failed).to_have_class("node failed")
    expect(page.locator("g.node[data-step='after']")).to_have_class("node cancelled")
    failed.click()
    expect(dialog.locator(".step-error")).to_contain_text("it failed")
    shot(page, "failed-step")
    page.keyboard.press("Escape")

    # The runs list shows both, live.
    page.get_by_role("link", name="Runs", exact=True).click()
    expect(page.locator("tbody tr")).to_have_count(2)
    expect(page.locator("tbody")).to_contain_text("publish-markdown")
    shot(page, "runs")

    page.get_by_role("link", name="Overview", exact=True).click()
    expect(page.get_by_text("invocations since start")).to_be_visible()
    shot(page, "overview")

    # On a phone: no sideways scrolling of the page.
    page.set_viewport_size({"width": 390, "height": 844})
    for view in ["#/", "#/actors", "#/runs"]:
        page.goto(URL + view)
        page.wait_for_timeout(300)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 391, f"{view} is {width}px wide on a 390px screen"
    shot(page, "phone-runs")

    assert not errors, f"the page logged errors: {json.dumps(errors)}"


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Refusals the test asks for (401) are logged by the browser; anything else is a fault.
    page.on(
        "console",
        lambda m: errors.append(m.text)
        if m.type == "error" and "status of 401" not in m.text
        else None,
    )
    try:
        run_checks(page, errors)
    except Exception:
        shot(page, "failure")
        print(f"page errors: {errors}; screenshot: {OUT / 'failure.png'}", file=sys.stderr)
        raise
    browser.close()
print("dashboard: ok")

