"""Browser tests: Playwright (sync API) driving the Debian Chromium against
pytest-django's live server.

Every page a test opens with ``new_page`` is checked with axe-core (vendored,
pinned: ``tests/e2e/vendor/README.md``) against WCAG 2.0/2.1 A and AA after each
load and once more, in its final state (htmx swaps included), when the test ends;
any violation fails the test at teardown. axe is evaluated through the DevTools
protocol, which the page's Content-Security-Policy does not govern, so the CSP
stays as strict in the tests as in production.

Run on PostgreSQL: the live server answers from its own thread, which SQLite's
file locking makes flaky. ``make browser`` installs Chromium when it is missing;
never ``playwright install``.
"""

import io
import os
import random
import shutil
import warnings
from pathlib import Path

import pytest
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter

from annotation import services

# Playwright's sync API runs an event loop in this thread; Django's ORM calls
# from the test body are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("PALATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
AXE_SOURCE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
# One run at a time per page (axe refuses to overlap): each call queues on the last.
AXE_RUN = (
    "tags => (window.__palateAxe = (window.__palateAxe || Promise.resolve())"
    ".catch(() => null)"
    ".then(() => axe.run(document, {runOnly: {type: 'tag', values: tags}})))"
    ".then(r => r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
    " nodes: v.nodes.map(n => n.target.join(' '))})))"
)
# Set PALATE_SCREENSHOTS=1 to (re)write docs/screenshots/*.png from the tests.
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "e2e" in item.keywords and not Path(CHROMIUM).exists():
            item.add_marker(
                pytest.mark.skip(reason=f"{CHROMIUM} missing: make browser")
            )


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def axe_violations(page) -> list[dict]:
    """axe-core's WCAG A/AA violations on the page as it is now."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_SOURCE)
    return page.evaluate(AXE_RUN, AXE_TAGS)


class AxeAudit:
    """Runs axe on every load of the pages it watches and keeps what it finds.

    A load handler runs while the test goes on and first keeps the page's HTML
    as the browser has it; when the test navigates away before axe has finished,
    that snapshot is audited when the test ends, in a JavaScript-enabled page with
    the same base URL (a second visit could not reproduce a POST's answer). Only
    a load whose context the test closed at that very moment is lost (a warning).
    axe never finishes in a page with JavaScript turned off (its timers do not
    run), so such pages are always audited from their snapshot."""

    def __init__(self, browser):
        self.browser = browser
        self.found: dict[tuple[str, str], dict] = {}
        self.lost: list[str] = []
        self.snapshots: list[tuple[str, str]] = []
        self.no_js: set[int] = set()
        self.checked = 0

    def watch(self, page, *, scripted: bool = True) -> None:
        if not scripted:
            self.no_js.add(id(page.context))
        page.on("load", self._on_load)

    def _audit(self, page, url: str) -> None:
        """Audit now, or keep a snapshot when the page runs no script."""
        if id(page.context) in self.no_js:
            self.snapshots.append((url, page.content()))
        else:
            self._record(url, axe_violations(page))

    def _record(self, url: str, violations: list[dict]) -> None:
        self.checked += 1
        path = url.split("//", 1)[-1].split("/", 1)[-1]
        for v in violations:
            self.found.setdefault((f"/{path}", v["id"]), v)

    def _on_load(self, page) -> None:
        from playwright.sync_api import Error

        url = page.url
        if not url.startswith("http"):
            return
        try:
            # The page as loaded, for a later audit if this one is cut short
            # (it may be a POST's answer, which no second visit could reproduce).
            html = page.content()
        except Error:  # the test closed the context or navigated under the handler
            self.lost.append(url)
            return
        try:
            self._audit(page, url)
        except Error:  # the test navigated on before axe finished
            self.snapshots.append((url, html))

    def finish(self, pages) -> None:
        for page in pages:
            if not page.is_closed() and page.url.startswith("http"):
                self._audit(page, page.url)
        if self.snapshots:
            ctx = self.browser.new_context()
            try:
                page = ctx.new_page()
                for url, html in self.snapshots:
                    base = f'<head><base href="{url}">'
                    page.set_content(html.replace("<head>", base, 1))
                    self._record(url, axe_violations(page))
            finally:
                ctx.close()

    def report(self) -> str:
        return "\n".join(
            f"{path}: {rule} ({v['impact']}) {v['help']}: {', '.join(v['nodes'][:5])}"
            for (path, rule), v in sorted(self.found.items())
        )


@pytest.fixture
def new_page(browser, live_server):
    """Pages in fresh browser contexts (a context is a separate cookie jar, i.e.
    another browser as far as the server can tell), each audited by axe-core."""
    contexts, pages = [], []
    audit = AxeAudit(browser)

    def make(viewport=(1280, 800), **kwargs):
        ctx = browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}, **kwargs
        )
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        page = ctx.new_page()
        audit.watch(page, scripted=kwargs.get("java_script_enabled") is not False)
        pages.append(page)
        return page

    yield make
    try:
        audit.finish(pages)
    finally:
        for ctx in contexts:
            ctx.close()
    if audit.lost:
        warnings.warn(
            f"axe-core: not audited (context closed): {audit.lost}", stacklevel=1
        )
    if audit.found:
        pytest.fail(
            f"axe-core found WCAG A/AA violations:\n{audit.report()}", pytrace=False
        )


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Per-test media folder (the media view reads MEDIA_ROOT per request)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    yield
    shutil.rmtree(settings.MEDIA_ROOT, ignore_errors=True)


def artwork(seed: int, size=(768, 768)) -> bytes:
    """A small abstract picture (gradient and soft shapes), distinct per seed, so
    pages and screenshots look like the real thing."""
    rnd = random.Random(seed)
    w, h = size
    c1 = [rnd.randrange(256) for _ in range(3)]
    c2 = [rnd.randrange(256) for _ in range(3)]
    img = PILImage.new("RGB", size)
    draw = ImageDraw.Draw(img)
    for y in range(h):
        t = y / (h - 1)
        draw.line(
            [(0, y), (w, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(c1, c2, strict=True)),
        )
    shapes = PILImage.new("RGBA", size, (0, 0, 0, 0))
    sd = ImageDraw.Draw(shapes)
    for _ in range(rnd.randint(3, 7)):
        x, y, r = rnd.randrange(w), rnd.randrange(h), rnd.randint(40, w // 3)
        colour = tuple(rnd.randrange(256) for _ in range(3)) + (rnd.randint(120, 220),)
        if rnd.random() < 0.6:
            sd.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        else:
            sd.rectangle([x - r, y - r // 2, x + r, y + r // 2], fill=colour)
    shapes = shapes.filter(ImageFilter.GaussianBlur(rnd.choice([0, 2, 8])))
    img.paste(shapes, (0, 0), shapes)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def add_artworks(study, n: int, start: int = 0, size=(768, 768)) -> None:
    for i in range(n):
        services.image_create(
            study=study,
            data=artwork(start + i, size),
            filename=f"art{start + i}.jpg",
            domain="art",
        )
