"""The console in a real browser: Playwright for Python driving Debian's
Chromium (``/usr/bin/chromium``; Playwright never downloads a browser),
against one console server and two chat worker PROCESSES (the demo's fleet)
on a private redis-server, shared by the module's tests.

Screenshots of each page go to tests/output/screenshots/; with
HOTPARAMS_SCREENSHOT_DOCS=1 the namespace page is also saved as
docs/console.png (the README's picture).  The time and clicks a person
needs to change ``temperature`` and see every worker apply it are written
to tests/output/console_timing.json.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hotparams
from hotparams.console import User
from hotparams.demo import Fleet
from hotparams.server import LocalRedis
from workers.params import ChatParams

from .conftest import need
from .helpers import dump_namespace, wait_until

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "output"
SHOTS = OUT / "screenshots"
TOKENS = {"viewer": "viewer-token-" + "v" * 24, "editor": "editor-token-" + "e" * 24}
WORKERS = 2
DEADLINE = 15.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, Any]]:
    """A private Redis, two chat worker processes and the console, for the module."""
    need(importlib.util.find_spec("playwright") is not None, "playwright (pip install playwright)")
    need(Path(CHROMIUM).exists() or shutil.which("chromium") is not None, "chromium (apt)")
    need(shutil.which("redis-server") is not None, "redis-server (on PATH)")
    from hotparams.console.server import ConsoleServer

    server = LocalRedis().start()
    bus = hotparams.connect(server.url)
    bus.register("chat", ChatParams)
    fleet = Fleet(server.url, "chat", WORKERS)
    console = None
    try:
        fleet.start()
        assert fleet.wait(lambda vs: all(v.ready for v in vs), 30), "the workers did not start"
        users = [User("ana", "editor", TOKENS["editor"]), User("vic", "viewer", TOKENS["viewer"])]
        console = ConsoleServer(
            hotparams.connect(server.url), users, port=0, wait=5.0, models=[("chat", ChatParams)]
        ).start()
        SHOTS.mkdir(parents=True, exist_ok=True)
        yield {"bus": bus, "fleet": fleet, "url": console.url.rstrip("/")}
    finally:
        if console is not None:
            console.close()
        fleet.stop()
        bus.close()
        server.close()


@pytest.fixture(scope="module")
def browser(stack: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


_SIGNED_IN: dict[str, Any] = {}


def new_page(browser: Any, stack: dict[str, Any], role: str, **options: Any) -> Any:
    """A page of a person signed in with ``role`` (signed in once per role, by keyboard)."""
    settings = {"viewport": {"width": 1200, "height": 900}, **options}
    if role in _SIGNED_IN:
        context = browser.new_context(storage_state=_SIGNED_IN[role], **settings)
        page = context.new_page()
        page.set_default_timeout(10_000)
        return page
    context = browser.new_context(**settings)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(stack["url"] + "/")
    assert "/login" in page.url
    page.get_by_label("token").fill(TOKENS[role])
    page.keyboard.press("Enter")  # keyboard only: the token field has the focus
    page.wait_for_url(re.compile(r"/$"))
    _SIGNED_IN[role] = context.storage_state()
    return page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def workers_on(stack: dict[str, Any], **values: Any) -> bool:
    views = stack["fleet"].views()
    return len(views) == WORKERS and all(
        all(getattr(v, k) == want for k, want in values.items()) for v in views
    )


def test_log_in_and_see_the_namespaces_with_their_fleet(
    browser: Any, stack: dict[str, Any]
) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(stack["url"] + "/ns/chat")
    shot(page, "login")
    page.get_by_label("token").fill("not-a-token-" + "x" * 24)
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_text("this token is not valid").is_visible()
    page.get_by_label("token").fill(TOKENS["editor"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/ns/chat$"))  # back where the person wanted to go
    assert page.get_by_text("signed in as ana (editor)").is_visible()
    page.get_by_role("link", name="hotparams").click()
    row = page.locator("#namespaces tr", has_text="chat")
    assert wait_until(lambda: f"{WORKERS}/{WORKERS} on v" in row.inner_text(), DEADLINE)
    shot(page, "namespaces")
    context.close()


def test_every_field_has_an_input_named_by_its_label(browser: Any, stack: dict[str, Any]) -> None:
    page = new_page(browser, stack, "editor")
    page.goto(stack["url"] + "/ns/chat/edit")
    labels = page.eval_on_selector_all(
        "form.edit input:not([type=hidden]), form.edit select, form.edit textarea",
        "els => els.map(e => e.labels.length === 1 ? e.labels[0].textContent.trim() : null)",
    )
    assert sorted(labels) == sorted([*ChatParams.model_fields, "reason"])  # one label each
    assert page.get_by_label("temperature", exact=True).get_attribute("max") == "2"
    assert page.get_by_label("model", exact=True).evaluate("e => e.tagName") == "SELECT"
    assert page.get_by_label("api_key", exact=True).input_value() == ""  # a secret: never sent
    page.context.close()


def test_a_bad_temperature_shows_an_inline_error_and_writes_nothing(
    browser: Any, stack: dict[str, Any]
) -> None:
    bus: hotparams.Bus = stack["bus"]
    before = dump_namespace(bus.client, "chat")
    page = new_page(browser, stack, "editor")
    page.goto(stack["url"] + "/ns/chat/edit")
    page.get_by_label("temperature", exact=True).fill("5")
    page.get_by_label("reason").fill("much warmer")
    page.get_by_role("button", name="Review the change").click()
    error = page.locator("#f-temperature-error")
    assert error.inner_text() == "temperature: must be <= 2 (got 5)"
    field = page.get_by_label("temperature", exact=True)
    assert field.get_attribute("aria-invalid") == "true"
    # the page's script moves the focus to the problem once it has run: poll for it
    assert wait_until(lambda: page.evaluate("document.activeElement.id") == "f-temperature", 5)
    shot(page, "edit-invalid")
    assert dump_namespace(bus.client, "chat") == before
    page.context.close()


def test_change_temperature_review_publish_and_every_worker_process_applies_it(
    browser: Any, stack: dict[str, Any]
) -> None:
    bus: hotparams.Bus = stack["bus"]
    current = bus.get("chat").values["temperature"]
    new = 0.3 if current != 0.3 else 0.4
    page = new_page(browser, stack, "editor")
    page.goto(stack["url"] + "/ns/chat")
    clicks = 0
    started = time.monotonic()
    page.get_by_role("link", name="Edit", exact=True).first.click()
    clicks += 1
    page.get_by_label("temperature", exact=True).fill(str(new))
    page.get_by_label("reason").fill("cooler replies")
    page.get_by_role("button", name="Review the change").click()
    clicks += 1
    row = page.locator("table.diff tr", has_text="temperature")
    assert re.search(rf"{current}\s*→?\s*{new}", row.inner_text().replace("\t", " "))
    shot(page, "review")
    version = bus.head("chat").version + 1
    published = time.monotonic()
    page.get_by_role("button", name=f"Publish v{version}").click()
    clicks += 1
    assert wait_until(lambda: workers_on(stack, version=version, temperature=new), DEADLINE)
    applied = time.monotonic()
    flash = page.locator(".flash").first
    flash.wait_for()
    took = applied - started
    # what Publish saw within its wait (5 s); every worker applied it by now (above)
    said = rf"v{version} published, \d/{WORKERS} workers applied it"
    assert re.fullmatch(said, flash.inner_text())
    shot(page, "published")
    if os.environ.get("HOTPARAMS_SCREENSHOT_DOCS") == "1":
        page.screenshot(path=str(ROOT / "docs" / "console.png"), full_page=False)
    change = bus.history("chat", limit=1)[0]
    assert (change.version, change.author, change.reason) == (version, "ana", "cooler replies")
    timing = {
        "task": "change temperature and see every worker apply it",
        "clicks": clicks,
        "fields_typed": 2,
        "seconds": round(took, 2),
        "publish_click_to_every_worker_applied_s": round(applied - published, 3),
        "workers": WORKERS,
        "driven_by": "Playwright (no human reading or typing time)",
    }
    (OUT / "console_timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(f"\nconsole timing: {timing}")
    page.context.close()


def test_without_javascript_and_with_the_keyboard_only_a_change_is_published(
    browser: Any, stack: dict[str, Any]
) -> None:
    bus: hotparams.Bus = stack["bus"]
    page = new_page(browser, stack, "editor", java_script_enabled=False)
    page.goto(stack["url"] + "/ns/chat/edit")
    tokens = bus.get("chat").values["max_tokens"] + 1
    page.get_by_label("max_tokens", exact=True).focus()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(tokens))
    page.get_by_label("reason").focus()
    page.keyboard.type("longer replies")
    page.keyboard.press("Enter")  # Enter in a text input sends the form
    page.wait_for_url(re.compile(r"/review$"))
    publish = page.get_by_role("button", name=re.compile(r"^Publish v\d+$"))
    for _ in range(20):  # Tab until the Publish button has the focus
        if publish.evaluate("b => b === document.activeElement"):
            break
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ns/chat$"))
    assert "published" in page.locator(".flash").first.inner_text()
    assert bus.get("chat").values["max_tokens"] == tokens
    assert wait_until(lambda: workers_on(stack, version=bus.head("chat").version), DEADLINE)
    page.context.close()


def test_the_fleet_page_shows_the_workers_reaching_a_new_version_live(
    browser: Any, stack: dict[str, Any]
) -> None:
    bus: hotparams.Bus = stack["bus"]
    page = new_page(browser, stack, "viewer")
    page.goto(stack["url"] + "/ns/chat/fleet")
    page.locator("table.fleet tbody tr").nth(WORKERS - 1).wait_for()
    version = bus.set("chat", {"max_tokens": 700 + bus.head("chat").version}, author="ops")
    summary = page.locator("#fleet .summary")  # the page is not reloaded: it updates itself
    summary.filter(has_text=f"{WORKERS}/{WORKERS} on v{version}").wait_for(timeout=DEADLINE * 1000)
    assert page.locator("#fleet tr.behind").count() == 0
    shot(page, "fleet")
    page.context.close()


def test_roll_back_from_history(browser: Any, stack: dict[str, Any]) -> None:
    bus: hotparams.Bus = stack["bus"]
    target = bus.head("chat").version
    wanted = bus.get("chat").values["temperature"]
    bus.set("chat", {"temperature": 1.9}, author="bob", reason="too hot")
    page = new_page(browser, stack, "editor")
    page.goto(stack["url"] + "/ns/chat/history")
    shot(page, "history")
    page.get_by_role("link", name=f"Roll back to v{target}", exact=True).click()
    assert "1.9" in page.locator("table.diff").inner_text()
    page.get_by_label("reason").fill("back from too hot")
    shot(page, "rollback-review")
    page.get_by_role("button", name=f"Roll back to v{target}").click()
    page.locator(".flash").first.wait_for()
    assert "(rollback to v" in page.locator(".flash").first.inner_text()
    assert wait_until(lambda: workers_on(stack, temperature=wanted), DEADLINE)
    change = bus.history("chat", limit=1)[0]
    assert (change.op, change.target, change.author) == ("rollback", target, "ana")
    page.context.close()


def test_create_a_50_percent_variant_that_the_workers_serve(
    browser: Any, stack: dict[str, Any]
) -> None:
    bus: hotparams.Bus = stack["bus"]
    page = new_page(browser, stack, "editor")
    page.goto(stack["url"] + "/ns/chat/variants")
    form = page.locator("section", has=page.get_by_role("heading", name="Create a variant"))
    form.get_by_label("name").fill("warm")
    form.get_by_label("percent").fill("50")
    form.get_by_label("overrides").fill('{"temperature": 0.9, "model": "gpt-4o"}')
    form.get_by_label("reason").fill("A/B: warmer replies for half the users")
    form.get_by_role("button", name="Create the variant").click()
    page.locator(".flash").first.wait_for()
    assert page.locator("table.variants tr", has_text="warm").locator("td").first.inner_text() == (
        "50%"
    )
    variant = bus.variants("chat").variants["warm"]
    assert variant.percent == 50.0 and dict(variant.overrides)["temperature"] == 0.9
    version = bus.head("chat").version

    def served_by_variant() -> bool:
        views = stack["fleet"].views()
        return all(v.requests_at(version).get("warm", 0) > 0 for v in views)

    assert wait_until(served_by_variant, DEADLINE)  # each worker serves some users the variant
    shot(page, "variants")
    page.context.close()


def test_a_viewer_cannot_publish(browser: Any, stack: dict[str, Any]) -> None:
    bus: hotparams.Bus = stack["bus"]
    before = dump_namespace(bus.client, "chat")
    page = new_page(browser, stack, "viewer")
    page.goto(stack["url"] + "/ns/chat")
    assert page.get_by_role("link", name="Edit", exact=True).count() == 0
    page.goto(stack["url"] + "/ns/chat/edit")
    assert page.get_by_role("heading", name="Not allowed (403)").is_visible()
    assert "needs the editor role (you are viewer)" in page.locator(".error").inner_text()
    shot(page, "viewer-refused")
    assert dump_namespace(bus.client, "chat") == before
    page.context.close()


def test_the_namespace_page_reads_on_a_phone(browser: Any, stack: dict[str, Any]) -> None:
    page = new_page(browser, stack, "viewer", viewport={"width": 390, "height": 844})
    page.goto(stack["url"] + "/ns/chat")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the screen: tables scroll in their box
    shot(page, "namespace-phone")
    page.context.close()
