"""The draw-a-digit page: its route in-process, then the page itself in headless Chromium
against the real service in a subprocess (mouse strokes, a file upload, the API key form, a
number written or uploaded in number mode)."""

from __future__ import annotations

import base64
import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from service.api.page import PAGE_CSP
from tests.conftest import SERVICE_KEY
from tests.service.conftest import (
    REPO,
    SELFTEST_DIR,
    running_app,
    write_package,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

STATIC = REPO / "service" / "static"
KEY = "page-test-key-0123456789"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Headless and quiet: no sandbox (root in CI), no GPU, no network of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# ---- the route, in-process ------------------------------------------------------------------


@pytest.mark.anyio
async def test_page_and_assets_are_served_with_their_types_and_policy(model_dir: Path) -> None:
    write_package(model_dir, "tiny")
    async with running_app(model_dir=model_dir, default_model="tiny", selftest=False) as client:
        page = await client.get("/")
        script = await client.get("/static/app.js")
        style = await client.get("/static/style.css")
        icon = await client.get("/static/favicon.svg")
        head = await client.head("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.text == (STATIC / "index.html").read_text()
    csp = page.headers["content-security-policy"]
    assert csp == PAGE_CSP
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.content == (STATIC / "app.js").read_bytes()
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    assert icon.headers["content-type"] == "image/svg+xml"
    assert head.status_code == 200 and head.content == b""


@pytest.mark.anyio
async def test_assets_revalidate_by_etag(model_dir: Path) -> None:
    write_package(model_dir, "tiny")
    async with running_app(model_dir=model_dir, default_model="tiny", selftest=False) as client:
        first = await client.get("/static/app.js")
        etag = first.headers["etag"]
        again = await client.get("/static/app.js", headers={"if-none-match": etag})
        stale = await client.get("/static/app.js", headers={"if-none-match": '"other"'})
    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304 and again.content == b""
    assert stale.status_code == 200 and stale.content == first.content


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path", ["/static/missing.js", "/static/index.html", "/static/app.py", "/static/..%2fapp.py"]
)
async def test_only_the_pages_own_files_are_served(model_dir: Path, path: str) -> None:
    write_package(model_dir, "tiny")
    async with running_app(model_dir=model_dir, default_model="tiny", selftest=False) as client:
        response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.anyio
async def test_page_opens_without_the_api_key_the_api_needs(model_dir: Path) -> None:
    write_package(model_dir, "tiny")
    async with running_app(
        model_dir=model_dir, default_model="tiny", selftest=False, api_keys=KEY
    ) as client:
        page = await client.get("/")
        script = await client.get("/static/app.js")
        models = await client.get("/models")
        with_key = await client.get("/models", headers={"X-API-Key": KEY})
    assert page.status_code == 200 and script.status_code == 200
    assert models.status_code == 401
    assert with_key.status_code == 200


@pytest.mark.anyio
async def test_page_is_not_part_of_the_api_reference(model_dir: Path) -> None:
    write_package(model_dir, "tiny")
    async with running_app(model_dir=model_dir, default_model="tiny", selftest=False) as client:
        document = (await client.get("/openapi.json")).json()
    assert "/" not in document["paths"]
    assert not any(path.startswith("/static") for path in document["paths"])


def test_page_loads_nothing_from_other_origins() -> None:
    # The machines that run the service may have no internet: every reference is relative.
    html = (STATIC / "index.html").read_text()
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert references, "the page references no files at all?"
    assert all("//" not in ref and not ref.startswith("/") for ref in references), references
    css = (STATIC / "style.css").read_text()
    assert "url(" not in css and "@import" not in css


# ---- the page, in a browser -----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    # A violated Content-Security-Policy shows up as a console error. (An API error answer
    # is logged as "Failed to load resource": the page shows those itself.)
    opened.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    yield opened
    context.close()
    assert not errors, errors


def draw(page: Page, strokes: list[list[tuple[float, float]]]) -> None:
    """Strokes in fractions of the pad, drawn with the mouse (pointer events)."""
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=10)
        page.mouse.up()


def wait_for_digit(page: Page, digit: int) -> None:
    page.wait_for_function(
        "d => document.querySelector('#digit').textContent === d", arg=str(digit), timeout=15_000
    )


def wait_for_number(page: Page, length: int) -> str:
    """The number the page shows, once it shows one of ``length`` digits and their boxes."""
    page.wait_for_function(
        "n => /^[0-9]+$/.test(document.querySelector('#digit').textContent)"
        " && document.querySelector('#digit').textContent.length === n"
        " && document.querySelectorAll('#boxes .box').length === n",
        arg=length,
        timeout=15_000,
    )
    return page.inner_text("#digit")


def box_spans(page: Page) -> list[tuple[float, float]]:
    """Each digit's box, left and right, as fractions of the pad's displayed width; every box
    checked to lie within the pad."""
    pad = page.locator("#canvas").bounding_box()
    assert pad is not None
    spans = []
    for box in page.locator("#boxes .box").all():
        found = box.bounding_box()
        assert found is not None
        assert (
            pad["x"] - 1 <= found["x"]
            and found["x"] + found["width"] <= pad["x"] + pad["width"] + 1
        )
        assert (
            pad["y"] - 1 <= found["y"]
            and found["y"] + found["height"] <= pad["y"] + pad["height"] + 1
        )
        assert found["width"] > 5 and found["height"] > 5
        left = (found["x"] - pad["x"]) / pad["width"]
        spans.append((left, left + found["width"] / pad["width"]))
    return spans


def number_png(digits: list[int]) -> tuple[bytes, tuple[int, int]]:
    """Shipped MNIST digits side by side, enlarged 3x, dark ink on white; and its size."""
    tile = 84
    picture = Image.new("L", (tile * len(digits), tile), 0)
    for index, digit in enumerate(digits):
        with Image.open(sorted(SELFTEST_DIR.glob(f"digit{digit}_mnist*.png"))[0]) as shipped:
            picture.paste(shipped.convert("L").resize((tile, tile)), (index * tile, 0))
    out = io.BytesIO()
    picture.point(lambda value: 255 - value).save(out, format="PNG")
    return out.getvalue(), picture.size


def seen_image(page: Page) -> Image.Image:
    source = page.get_attribute("#seen", "src")
    assert source is not None and source.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))


@pytest.mark.slow
def test_drawn_strokes_are_read(page: Page, service_url: str) -> None:
    page.goto(service_url + "/")
    page.wait_for_selector("#model:not([disabled])")
    assert page.input_value("#model") == "lenet5/1"
    assert "All models (compare)" in page.inner_text("#model")

    draw(page, [[(0.5, 0.15), (0.5, 0.85)]])  # a 1: one vertical stroke
    wait_for_digit(page, 1)
    assert page.is_visible("#answer")
    assert page.inner_text("#answered-by") == "lenet5 v1"
    rows = page.locator("#bars li")
    assert rows.count() == 10
    assert "best" in (rows.nth(1).get_attribute("class") or "")
    assert seen_image(page).size == (28, 28)

    page.click("#clear")
    assert page.is_hidden("#answer")
    draw(page, [[(0.25, 0.2), (0.75, 0.2), (0.4, 0.85)]])  # a 7: bar, then down-stroke
    wait_for_digit(page, 7)


@pytest.mark.slow
def test_uploaded_file_is_read_and_the_models_view_shown(page: Page, service_url: str) -> None:
    page.goto(service_url + "/")
    page.wait_for_selector("#model:not([disabled])")
    shipped = sorted(SELFTEST_DIR.glob("digit4_*.png"))[0]
    page.set_input_files("#file", str(shipped))
    wait_for_digit(page, 4)
    assert page.is_visible("#seen")
    seen = page.eval_on_selector("#seen", "img => [img.naturalWidth, img.naturalHeight]")
    assert seen == [28, 28]
    assert "%" in page.inner_text("#confidence")

    # Every model, on the same file: the answer says whether they agree.
    page.select_option("#model", "all")
    page.wait_for_selector("#ensemble:not([hidden])")
    wait_for_digit(page, 4)
    assert page.inner_text("#verdict") == "All 2 models agree"
    assert page.locator("#ensemble-rows tr").count() == 2


@pytest.mark.slow
def test_page_asks_for_the_api_key_and_sends_it(page: Page, keyed_service_url: str) -> None:
    page.goto(keyed_service_url + "/")
    page.wait_for_selector("#key-form:not([hidden])")
    assert "needs an API key" in page.inner_text("#status")
    page.fill("#api-key", SERVICE_KEY)
    page.click("#key-form button")
    page.wait_for_selector("#model:not([disabled])")
    assert page.input_value("#model") == "tiny/1"
    draw(page, [[(0.5, 0.15), (0.5, 0.85)]])
    page.wait_for_selector("#answer:not([hidden])")
    assert page.inner_text("#answered-by") == "tiny v1"
    assert page.evaluate("sessionStorage.getItem('digits.apiKey')") == SERVICE_KEY


@pytest.mark.slow
def test_a_written_number_is_read_with_a_box_around_each_digit(
    page: Page, service_url: str
) -> None:
    page.goto(service_url + "/")
    page.wait_for_selector("#model:not([disabled])")
    page.click("label[for=mode-number]")
    assert page.is_checked("#mode-number")
    assert page.inner_text("#input-title") == "Your number"
    pad = page.locator("#canvas").bounding_box()
    assert pad is not None and 2.8 < pad["width"] / pad["height"] < 3.2  # a wide pad
    assert page.is_hidden("#bars")
    assert page.is_disabled("#model option[value=all]")  # a number is read by one model

    # 1, 7, 1 in the pad's thirds, as in the one-digit test.
    draw(page, [[(0.17, 0.15), (0.17, 0.85)]])
    draw(page, [[(0.42, 0.2), (0.58, 0.2), (0.47, 0.85)]])
    draw(page, [[(0.83, 0.15), (0.83, 0.85)]])
    assert wait_for_number(page, 3) == "171"
    spans = box_spans(page)
    for third, (left, right) in enumerate(spans):  # each box around its own digit
        assert third / 3 <= (left + right) / 2 <= (third + 1) / 3, spans
    labels = page.locator("#boxes .box-label").all_inner_texts()
    assert [label.split(" ")[0] for label in labels] == ["1", "7", "1"]
    assert all(label.endswith("%") for label in labels)
    assert "%" in page.inner_text("#confidence")
    assert page.inner_text("#verdict") in ("Sure", "Uncertain: check by eye")
    assert page.inner_text("#answered-by") == "lenet5 v1"
    assert page.locator("#reading-digits li").count() == 3
    assert page.locator("#reading-digits img").count() == 3  # what the model saw, per digit

    page.click("#clear")
    assert page.is_hidden("#answer") and page.locator("#boxes .box").count() == 0


@pytest.mark.slow
def test_an_uploaded_number_is_read_with_boxes_over_the_shown_picture(
    page: Page, service_url: str, tmp_path: Path
) -> None:
    png, (width, height) = number_png([3, 0, 7])
    picture = tmp_path / "zip.png"
    picture.write_bytes(png)
    page.goto(service_url + "/")
    page.wait_for_selector("#model:not([disabled])")
    page.click("label[for=mode-number]")
    page.set_input_files("#file", str(picture))
    assert wait_for_number(page, 3) == "307"
    # The picture is shown fitted to the pad (1200x400, 6% margins), centred.
    scale = min((1200 - 48) / width, (400 - 48) / height)
    shown_left = (1200 - width * scale) / 2 / 1200
    shown_width = width * scale / 1200
    for index, (left, right) in enumerate(box_spans(page)):
        tile_left = shown_left + shown_width * index / 3
        assert tile_left <= left and right <= tile_left + shown_width / 3

    # The number of digits, when given, goes with the request.
    with page.expect_request(lambda r: "/read?" in r.url and "length=3" in r.url):
        page.fill("#length", "3")
        page.locator("#length").blur()
    page.wait_for_function(
        "() => !document.querySelector('#status').textContent.startsWith('Reading')"
    )
    assert wait_for_number(page, 3) == "307"

    # A blank page: the service's error, and no boxes left standing.
    blank = tmp_path / "blank.png"
    Image.new("L", (300, 100), 255).save(blank)
    page.set_input_files("#file", str(blank))
    page.wait_for_selector("#status.error")
    assert page.locator("#boxes .box").count() == 0

    # Back to one digit, the same file: read as one digit, with a pointer to number mode.
    page.set_input_files("#file", str(picture))
    wait_for_number(page, 3)
    page.click("label[for=mode-digit]")
    page.wait_for_function("() => document.querySelector('#digit').textContent.length === 1")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('3 digits')"
    )
    assert page.locator("#boxes .box").count() == 0
    assert page.is_visible("#bars") and page.is_visible("#seen")
