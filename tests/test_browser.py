"""The web demo in a real headless browser: streamlit serves scripts/web_demo.py on a free port with a tiny
checkpoint, Chromium (Debian's chromium + chromium-driver) types a message and waits for the answer, and
a screenshot is saved. Skips without Chromium, unless env CI is set (then it fails).

    apt-get install -y chromium chromium-driver && pytest tests/test_browser.py
    TINYMIND_SCREENSHOT=/tmp/demo.png pytest tests/test_browser.py      # keep the screenshot
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

from factories import REPO as ROOT, make_checkpoint
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)
DRIVER = "/usr/bin/chromedriver"


def need_browser():
    missing = [what for what, ok in (("chromium", CHROMIUM), ("chromedriver", Path(DRIVER).exists())) if not ok]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -r requirements-dev.txt)")
    if missing:
        msg = f"missing {', '.join(missing)}: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI is set, so this test must run)")
        pytest.skip(msg)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = check()
        except Exception:       # noqa: BLE001 - element not there yet, server not up yet
            value = None
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def server(tmp_path):
    """URL of `streamlit run scripts/web_demo.py` on a tiny checkpoint; the server is killed afterwards."""
    need_browser()
    out = tmp_path / "out"
    make_checkpoint(out / "full_sft_64.pth")
    port = free_port()
    env = {**os.environ, "TINYMIND_OUT_DIR": str(out), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "scripts/web_demo.py",
                             "--server.headless", "true", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is not None and "exited"
                   or urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok", 60,
                   "the streamlit server")
        assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_chat_in_headless_chromium(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.set_page_load_timeout(60)
        driver.get(server)
        box = wait_until(lambda: driver.find_element(By.CSS_SELECTOR, '[data-testid="stChatInput"] textarea'),
                         60, "the chat input")
        box.send_keys("Hello, who are you?")
        box.send_keys(Keys.ENTER)
        # the reply is done when the sidebar shows its speed
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricValue"]'), 90,
                   "the answer's tokens/s")
        messages = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stChatMessage"]')
        assert len(messages) == 2
        assert "Hello, who are you?" in messages[0].text
        assert "tok/s" in driver.find_element(By.CSS_SELECTOR, '[data-testid="stMetricValue"]').text
        shot = tmp_path / "web_demo.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("TINYMIND_SCREENSHOT"):
            shutil.copy(shot, os.environ["TINYMIND_SCREENSHOT"])
    finally:
        driver.quit()
