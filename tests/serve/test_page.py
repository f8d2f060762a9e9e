"""The web page in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
type a query, see the result thumbnails, ask a VQA question, take screenshots.

Skipped where Chromium is not installed, unless REQUIRE_BROWSER=1 (as `.ci/run` sets after
installing it), where it fails instead."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER) and not os.environ.get("REQUIRE_BROWSER"):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )


@pytest.fixture
def browser(tmp_path):
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and DRIVER, "REQUIRE_BROWSER is set but chromium or chromedriver is missing"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The background-networking flags keep Chromium from reaching for Google's hosts,
    # which this closed network refuses.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1100,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_search_shows_thumbnails_and_vqa_answers(app_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{app_url}/")
    WebDriverWait(browser, 30).until(
        lambda d: "videos in 2/2 shards" in d.find_element(By.ID, "health").text
    )
    browser.find_element(By.ID, "query").send_keys("a red circle moves to the left")
    browser.find_element(By.ID, "search-button").click()

    def thumbnails_loaded(d):
        images = d.find_elements(By.CSS_SELECTOR, "figure.hit img")
        return (
            len(images) == 12
            and all(
                d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
                for img in images
            )
            and images
        )

    images = WebDriverWait(browser, 30).until(thumbnails_loaded)
    assert all(
        browser.execute_script("return arguments[0].naturalWidth", img) == 64 for img in images
    )
    scores = [float(s.text) for s in browser.find_elements(By.CSS_SELECTOR, "figure.hit .score")]
    assert scores == sorted(scores, reverse=True)
    assert "12 videos in" in browser.find_element(By.ID, "search-status").text
    browser.save_screenshot(str(tmp_path / "search.png"))
    assert Image.open(tmp_path / "search.png").size[0] > 0

    image = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(
        image
    )
    browser.find_element(By.ID, "image").send_keys(str(image))
    browser.find_element(By.ID, "question").send_keys("what is the surgical phase")
    browser.find_element(By.CSS_SELECTOR, "#vqa-form button").click()
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#vqa-out li")) == 5
    )
    assert "%" in browser.find_element(By.ID, "vqa-out").text
    browser.save_screenshot(str(tmp_path / "vqa.png"))

    # explain: each hit's words x frames heat map beside its thumbnail, as the JSON has it.
    browser.find_element(By.ID, "explain").click()
    browser.find_element(By.ID, "search-button").click()
    tables = WebDriverWait(browser, 30).until(
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, "figure.hit table.wti")) == 12
            and d.find_elements(By.CSS_SELECTOR, "figure.hit table.wti")
        )
    )
    from serve_helpers import call

    _, out = call(
        f"{app_url}/search",
        {"text": "a red circle moves to the left", "top_k": 12, "explain": True},
    )
    first = out["results"][0]["explain"]
    rows = tables[0].find_elements(By.CSS_SELECTOR, "tr.token")
    assert [r.find_element(By.TAG_NAME, "th").text for r in rows] == first["tokens"]
    for row, best in zip(rows, first["token_best_frame"]):
        cells = row.find_elements(By.CSS_SELECTOR, "td.cell")
        assert len(cells) == len(first["frame_weights"])
        assert [i for i, c in enumerate(cells) if "best" in c.get_attribute("class")] == [best]
    assert "= (text→video" in browser.find_element(By.CSS_SELECTOR, "figure.hit .wti-sum").text
    browser.execute_script("arguments[0].scrollIntoView()", tables[0])
    browser.save_screenshot(str(tmp_path / "explain.png"))
    # The heat map is drawn, not only its numbers: the first table's cells are coloured.
    box = tables[0].rect
    shot = np.asarray(Image.open(tmp_path / "explain.png").convert("RGB"))
    x, y = int(box["x"]), int(box["y"] - browser.execute_script("return window.scrollY"))
    table = shot[max(y, 0) : y + int(box["height"]), x : x + int(box["width"])].astype(int)
    tinted = (np.abs(table[..., 0] - table[..., 2]) > 60).mean()
    assert tinted > 0.2, tinted
    print(f"screenshots in {tmp_path}")
