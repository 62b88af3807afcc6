"""The browser every browser test drives: Debian's chromium through Playwright (no download);
without it these tests are skipped here, and `.ci/run` installs it.

Every page a test opens is watched for Content-Security-Policy violations and for JavaScript
dialogs (alert, confirm, prompt: Parley's own pages use none, so one is injected script); a test
during which either happened fails at teardown."""

import os
import shutil
from pathlib import Path

import pytest
from django.db import connections

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(os.environ.get("PARLEY_SCREENSHOTS", "var/screenshots"))

# Chromium logs each blocked load or inline script to the console ("Refused to … because it
# violates the following Content Security Policy directive"); the listener also names the
# directive for what the console words differently (report-only policies, frames).
_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`Content Security Policy violation: ${event.violatedDirective} blocked ${event.blockedURI}`
    + ` at ${event.sourceFile}:${event.lineNumber}`);
});
"""


class WatchedBrowser:
    """A Playwright browser whose every context reports CSP violations and dialogs to the test."""

    def __init__(self, browser):
        self._browser = browser
        self.csp_violations: list[str] = []
        self.dialogs: list[str] = []

    def __getattr__(self, name):
        return getattr(self._browser, name)

    def new_context(self, **options):
        context = self._browser.new_context(**options)
        context.add_init_script(_REPORT_VIOLATIONS)
        context.on("console", self._console)
        context.on("dialog", self._dialog)
        return context

    def new_page(self, **options):
        return self.new_context(**options).new_page()

    def _console(self, message) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.csp_violations.append(f"{message.text} ({message.location.get('url', '')})")

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message} ({dialog.page.url})")
        dialog.dismiss()


@pytest.fixture
def browser(monkeypatch):
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop runs in this thread
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        watched = WatchedBrowser(launched)
        try:
            yield watched
        finally:
            launched.close()
            connections.close_all()  # the ones opened while Playwright's loop ran
        assert not watched.csp_violations, "Content-Security-Policy violations:\n" + "\n".join(watched.csp_violations)
        assert not watched.dialogs, "JavaScript dialogs opened (injected script?):\n" + "\n".join(watched.dialogs)
