"""Browser tests: Playwright (sync API) driving the Debian Chromium against
pytest-django's live server.

Run on PostgreSQL: the live server answers from its own thread, which SQLite's
file locking makes flaky. ``make browser`` installs Chromium when it is missing;
never ``playwright install``.
"""

import io
import os
import random
import shutil
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


@pytest.fixture
def new_page(browser):
    """Pages in fresh browser contexts (a context is a separate cookie jar, i.e.
    another browser as far as the server can tell)."""
    contexts = []

    def make(viewport=(1280, 800), **kwargs):
        ctx = browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}, **kwargs
        )
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()


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
