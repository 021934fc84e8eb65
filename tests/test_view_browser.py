"""``nerfexport view`` in a real browser: Debian's chromium, headless, driven by chromedriver
(selenium). The page loads, first frames appear and refine to full size, a drag gives a new
frame from another camera, the wheel zooms, reset returns; a screenshot is saved. Skipped,
with the reason, where chromium, chromedriver or selenium is missing (``.ci/run`` installs them
where apt can)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from test_view_api import make_bundles

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1000,800")

if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
    pytest.skip("chromium/chromedriver not installed: apt-get install chromium chromium-driver",
                allow_module_level=True)
pytest.importorskip("selenium", reason="selenium not installed: pip install 'nerfexport[test]'")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    from nerfexport.deploy.viewer.server import Viewer, make_server
    b = make_bundles(tmp_path_factory.mktemp("viewb"))
    httpd = make_server(Viewer.open([b["fp32"], b["int8"]]), "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.url
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def driver(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS + (f"--user-data-dir={tmp_path / 'profile'}",):
        opts.add_argument(f)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


SHOWN = "return window.nerfViewer ? window.nerfViewer.panels.map(p => p.shown) : null"
PIXELS = ("const img = document.querySelectorAll('.panel img')[arguments[0]];"
          "const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;"
          "c.getContext('2d').drawImage(img, 0, 0); return c.toDataURL('image/png');")


def full_frames(d, after: int = 0) -> list[dict]:
    """Wait until every panel shows a full-size frame newer than ``after`` for the page's current camera."""
    def ready(d):
        shown, cam = d.execute_script(SHOWN), d.execute_script("return window.nerfViewer.camera()")
        ok = shown and all(s and s["level"] == 1 and s["seq"] > after and s["az"] == cam["az"] and s["r"] == cam["r"]
                           for s in shown)
        return shown if ok else False
    return WebDriverWait(d, 120, 0.1).until(ready)


def test_the_viewer_loads_renders_and_follows_a_drag(url, driver, tmp_path):
    driver.get(url)
    assert driver.title == "nerfexport view"
    first = full_frames(driver)
    assert len(first) == 2
    levels = driver.execute_script("return window.nerfViewer.panels.map(p => p.frames)")
    assert all(n >= 3 for n in levels), levels   # 1/4, 1/2 and full size
    img = driver.find_elements(By.CSS_SELECTOR, ".panel img")[0]
    assert driver.execute_script("return arguments[0].naturalWidth", img) == 16
    before = driver.execute_script(PIXELS, 0)
    stats = driver.find_elements(By.CSS_SELECTOR, ".stats")
    assert "ms/frame" in stats[0].text and "evaluations/frame" in stats[0].text and "ort-cpu" in stats[0].text
    assert "fp32" in stats[0].text and "int8" in stats[1].text and "MB" in stats[1].text

    ActionChains(driver).move_to_element(img).click_and_hold().move_by_offset(60, 25).release().perform()
    after = full_frames(driver, max(s["seq"] for s in first))
    assert after[0]["az"] != first[0]["az"] and after[0]["el"] != first[0]["el"]
    assert after[0]["az"] == after[1]["az"]   # one camera for both bundles
    assert driver.execute_script(PIXELS, 0) != before   # a new image
    driver.save_screenshot(str(tmp_path / "viewer.png"))
    assert (tmp_path / "viewer.png").stat().st_size > 1000

    ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(img), 0, 300).perform()
    zoomed = full_frames(driver, max(s["seq"] for s in after))
    assert zoomed[0]["r"] > after[0]["r"]
    driver.find_element(By.ID, "reset").click()
    reset = full_frames(driver, max(s["seq"] for s in zoomed))
    assert (reset[0]["az"], reset[0]["el"], reset[0]["r"]) == (first[0]["az"], first[0]["el"], first[0]["r"])
    driver.find_element(By.ID, "skip").click()   # empty-space skipping off: the frames are rendered again
    plain = full_frames(driver, max(s["seq"] for s in reset))
    assert reset[0]["skip"] is True and plain[0]["skip"] is False and plain[0]["seq"] > reset[0]["seq"]
