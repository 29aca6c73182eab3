"""``ss4d-app`` in a real browser: the app is started on 127.0.0.1 (a free port), headless Chromium
(Debian's ``chromium`` driven by Debian's ``chromium-driver`` through selenium; nothing downloaded)
uploads the demo clip, runs the tiny random pipeline with 2 frames, and the page must show the three
videos, both 3D viewers and the download links (which must serve a zip and a GLB); a bad upload must
come back as a message on the page. A screenshot of each state is saved to ``$SS4D_TEST_ARTIFACTS``
(default ``test-artifacts/`` in the repo).

Skips with the reason when selenium / gradio, chromium or chromedriver is missing: ``make test``
installs them where it can (apt on Debian, as root).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("gradio", reason="the 'app' extra is not installed (pip install -e .[app])")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[browser])")

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CLIP = REPO / "assets" / "dancing_robot_fg.mp4"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver")
                                                else None)
ARTIFACTS = Path(os.environ.get("SS4D_TEST_ARTIFACTS", str(REPO / "test-artifacts")))
STARTUP_S, RUN_S, PAGE_S, VIEWER_SETTLE_S = 120, 150, 30, 10
WINDOW = (1400, 1500)
#: Progress bar titles of the stages (tqdm descriptions shown by gradio); the long ones are checked.
STAGES = ("Reading the input", "Sparse structure", "Structured latent", "Rendering", "Meshing")
PROGRESS_POLL_S = 1.0
VIDEO_IDS = ("ss4d-input-video", "ss4d-turntable", "ss4d-novel")
VIEWER_IDS = ("ss4d-mesh-view", "ss4d-splat-view")
RESULT_JS = """
const q = (sel) => Array.from(document.querySelectorAll(sel));
const videos = {}, canvases = {};
for (const id of ["ss4d-input-video", "ss4d-turntable", "ss4d-novel"])
  videos[id] = q("#" + id + " video").filter(v => v.getAttribute("src")).length > 0;
for (const id of ["ss4d-mesh-view", "ss4d-splat-view"]) canvases[id] = q("#" + id + " canvas").length > 0;
return {status: document.getElementById("ss4d-status").innerText,
        errors: q(".toast-body, [data-testid='toast-body']").map(e => e.innerText).join(" "),
        videos: videos, canvases: canvases,
        links: q("#ss4d-downloads a[download]").map(a => [a.getAttribute("download"), a.href])};
"""
PAGE_TEXT_JS = ("return Array.from(document.querySelectorAll(\"[data-testid='status-tracker']\"))"
                ".map(e => e.innerText).join(' | ')")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium or chromedriver not found (Debian: apt-get install chromium chromium-driver; "
           "`make test` does it when run as root with apt)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """``ss4d-app --tiny`` on 127.0.0.1; stopped (by its pid) after the module."""
    work = tmp_path_factory.mktemp("app_work")
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    log = open(work / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ss4d.app", "--tiny", "--host", "127.0.0.1", "--port", str(port),
                             "--threads", "1", "--work-dir", str(work / "tmp"), "--max-runs", "2"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + STARTUP_S
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"ss4d-app did not start: {(work / 'app.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, work
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--use-gl=swiftshader", "--enable-unsafe-swiftshader"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _set_number(driver, elem_id: str, value) -> None:
    """Type into the number box of a gradio slider / number."""
    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value), Keys.TAB)


def _upload(driver, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, "#ss4d-upload input[type=file]").send_keys(str(path))
    WebDriverWait(driver, PAGE_S).until(lambda d: path.stem in d.find_element(By.ID, "ss4d-upload").text)


def _screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def _error_text(driver) -> str:
    toasts = driver.find_elements(By.CSS_SELECTOR, ".toast-body, [data-testid='toast-body']")
    return " ".join(t.text for t in toasts if t.text.strip())


def test_generate_in_the_browser(app_url, browser):
    url, work = app_url
    browser.get(url)
    WebDriverWait(browser, PAGE_S).until(lambda d: d.find_elements(By.ID, "ss4d-generate"))
    _upload(browser, CLIP)
    for elem_id, value in (("ss4d-frames", 2), ("ss4d-stride", 8), ("ss4d-steps", 2), ("ss4d-resolution", 64)):
        _set_number(browser, elem_id, value)
    browser.find_element(By.ID, "ss4d-generate").click()
    progress = set()

    def finished(d) -> bool:
        text = d.execute_script(PAGE_TEXT_JS)     # one round trip per poll: the browser shares the cores
        progress.update(stage for stage in STAGES if stage in text)
        return "Done" in d.find_element(By.ID, "ss4d-status").text or bool(_error_text(d))

    try:
        WebDriverWait(browser, RUN_S, poll_frequency=PROGRESS_POLL_S).until(finished)
    except TimeoutException:
        _screenshot(browser, "app_timeout.png")
        raise
    # one round trip for every check: the page's WebGL viewers leave the (shared) cores little time
    assert not _error_text(browser), _error_text(browser)
    try:   # the viewers and players appear once their files have loaded
        page = WebDriverWait(browser, PAGE_S, poll_frequency=PROGRESS_POLL_S).until(
            lambda d: (lambda p: p if all(p["canvases"].values()) and all(p["videos"][i] for i in VIDEO_IDS) else None)(
                d.execute_script(RESULT_JS)))
    except TimeoutException:
        page = browser.execute_script(RESULT_JS)
    assert "Random weights" in page["status"]
    assert {"Rendering", "Meshing"} <= progress, f"per-stage progress not shown (saw {sorted(progress)})"
    for elem_id in VIDEO_IDS:
        assert page["videos"][elem_id], f"no video in #{elem_id}"
    for elem_id in VIEWER_IDS:
        assert page["canvases"][elem_id], f"no 3D viewer in #{elem_id}"
    links = dict(page["links"])
    for name in ("gaussians_ply.zip", "animation.glb", "splat.zip", "result.json"):
        assert name in links, f"{name} not among the download links {sorted(links)}"
    assert urllib.request.urlopen(links["animation.glb"], timeout=10).read(4) == b"glTF"
    assert urllib.request.urlopen(links["gaussians_ply.zip"], timeout=10).read(4) == b"PK\x03\x04"
    time.sleep(VIEWER_SETTLE_S)   # let the 3D viewers draw before the screenshot
    shot = _screenshot(browser, "app_result.png")
    assert shot.stat().st_size > 0
    # the bounded temp folder: this run's folder lives under the app's work dir
    assert len(list((work / "tmp").glob("run-*"))) == 1


def test_bad_upload_is_a_message_on_the_page(app_url, browser, tmp_path):
    url, _ = app_url
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    browser.get(url)
    WebDriverWait(browser, PAGE_S).until(lambda d: d.find_elements(By.ID, "ss4d-generate"))
    _upload(browser, bad)
    browser.find_element(By.ID, "ss4d-generate").click()
    WebDriverWait(browser, RUN_S).until(_error_text)
    _screenshot(browser, "app_error.png")
    text = _error_text(browser)
    assert "Cannot decode not_a_video.mp4" in text, text
    assert "/tmp" not in text and str(url) not in text, "server paths leaked into the message"
    assert "Traceback" not in browser.page_source
