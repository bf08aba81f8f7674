"""The demo app in headless Chromium (Playwright): upload a real record, type conditions, press
Score, and read the table and the drawing the page shows.

Playwright's own browser download cannot be reached here, so the test drives the distribution's
``chromium`` (``.ci/run`` installs it with apt-get) through ``executable_path``; it skips, saying
why, only where no such browser is installed. With ``SUPREME_APP_SCREENSHOT=path.png`` it also
writes the page's screenshot there (the README's picture is made this way).
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from modeling_supreme.app import ECGDemo

from test_app import RECORD, free_port

pytest.importorskip("gradio", reason="the demo app needs the 'app' extra: pip install -e '.[app]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs the 'app' extra (playwright)")

CHROMIUM = os.environ.get("SUPREME_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TYPED = "atrial fibrillation\nsinus rhythm\nleft bundle branch block"


@pytest.fixture
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install the distribution's package (apt-get install chromium) "
                    "or set SUPREME_CHROMIUM; Playwright's own browser download is not used")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def app_url(tiny_checkpoint, tmp_path):
    model = os.environ.get("SUPREME_APP_MODEL", str(tiny_checkpoint))  # a trained one for the README's picture
    demo = ECGDemo(model, temp_dir=str(tmp_path))
    blocks = demo.build()
    port = free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", demo
    blocks.close()
    demo.close()


@pytest.mark.slow  # a browser process
def test_upload_type_conditions_and_read_the_result(browser, app_url, ptbxl_dir, tmp_path):
    url, demo = app_url
    record = tmp_path / "upload"
    record.mkdir()
    files = []
    for suffix in (".hea", ".dat"):
        files.append(record / ("00001_lr" + suffix))
        shutil.copyfile(ptbxl_dir / (RECORD + suffix), files[-1])
    page = browser.new_page(viewport={"width": 1500, "height": 1150})
    page.goto(url, wait_until="networkidle")
    page.locator("#record-files input[type=file]").set_input_files([str(f) for f in files])
    # the upload has finished when the component lists both files (name and suffix are shown apart)
    sync_api.expect(page.locator("#record-files")).to_contain_text(
        re.compile(r"00001_lr\s*\.hea.*00001_lr\s*\.dat", re.S), timeout=30_000)
    conditions = page.locator("#conditions textarea")
    conditions.fill(TYPED)
    page.locator("#score").click()
    page.locator("#message").get_by_text("Scored 1 record(s) against 3 condition(s)").wait_for(timeout=120_000)

    # Gradio's table is an ARIA grid: one role=row per body row (the header row has no gridcells)
    grid_rows = page.locator("#scores [role=grid] [role=row]").filter(has=page.locator("[role=gridcell]"))
    rows = [[cell.inner_text().strip() for cell in row.locator("[role=gridcell]").all()] for row in grid_rows.all()]
    assert len(rows) == 3, rows
    assert sorted(row[1] for row in rows) == sorted(TYPED.splitlines())
    assert all(row[0] == "00001_lr" for row in rows)
    scores = [float(row[2]) for row in rows]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)

    image = page.locator("#drawing img")
    image.wait_for(timeout=30_000)
    width, height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width > 800 and 0.3 < height / width < 0.8  # the 3x4 + rhythm strip paper, not a placeholder
    shot = page.screenshot(full_page=True)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("SUPREME_APP_SCREENSHOT")
    if target:
        Path(target).write_bytes(shot)
    page.close()
