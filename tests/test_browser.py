"""The web demo served for real: streamlit serves scripts/web_demo.py on a free port with a tiny checkpoint
and no other settings than the shipped .streamlit/config.toml. It answers on 127.0.0.1 and refuses another
address of this machine (no browser needed). Chromium (Debian's chromium + chromium-driver) types a message
and waits for the answer, and a screenshot is saved; Chinese must render as glyphs, not boxes (a CJK font,
as .ci/run installs). Those tests skip without Chromium or the font, unless env CI is set (then they fail).

    apt-get install -y chromium chromium-driver fonts-wqy-microhei && pytest tests/test_browser.py
    TINYMIND_SCREENSHOT=/tmp/demo.png pytest tests/test_browser.py      # keep the screenshot
"""
import contextlib
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from factories import REPO as ROOT, free_port, make_checkpoint
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)
DRIVER = "/usr/bin/chromedriver"


def skip_or_fail(msg):
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI is set, so this test must run)")
    pytest.skip(msg)


def need_browser():
    missing = [what for what, ok in (("chromium", CHROMIUM), ("chromedriver", Path(DRIVER).exists())) if not ok]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -r requirements-dev.txt)")
    if missing:
        skip_or_fail(f"missing {', '.join(missing)}: apt-get install -y chromium chromium-driver")


def need_cjk_font():
    """A font that fontconfig (so Chromium) has for Chinese; without one Chinese shows as boxes."""
    try:
        fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True).stdout
    except OSError:
        fonts = ""
    if not fonts.strip():
        skip_or_fail("no font for Chinese (fc-list :lang=zh lists none), so Chinese renders as boxes: "
                     "apt-get install -y fonts-wqy-microhei")


@contextlib.contextmanager
def chromium():
    """A headless Chromium driven by selenium, quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()


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


@contextlib.contextmanager
def streamlit_server(tmp_path):
    """Port of `streamlit run scripts/web_demo.py` run from the repository root on a tiny checkpoint, with
    no settings but a free port (the shipped .streamlit/config.toml decides the rest: never start it
    elsewhere here, where unconfigured streamlit looks up this machine's public address on the internet),
    once it answers on 127.0.0.1; the server is killed afterwards."""
    out = tmp_path / "out"
    make_checkpoint(out / "full_sft_64.pth")
    docs = out / "docs" / "mine"                # documents the page offers (out/docs/*)
    docs.mkdir(parents=True)
    (docs / "instruments.md").write_text("The oboe is a double-reed woodwind instrument.\n", encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env["TINYMIND_OUT_DIR"] = str(out)
    log = open(tmp_path / "streamlit.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "scripts/web_demo.py",
                             "--server.headless", "true", "--server.port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is not None and "exited"
                   or urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok",
                   60, "the streamlit server")
        assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture
def server(tmp_path):
    """URL of the web demo for the browser."""
    need_browser()
    with streamlit_server(tmp_path) as port:
        yield f"http://127.0.0.1:{port}"


def own_address():
    """An IPv4 address of this machine that is not loopback, or None. Connecting a UDP socket picks the
    interface of the default route and sends nothing (192.0.2.1 is a documentation address, RFC 5737)."""
    found = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            found.append(s.getsockname()[0])
    except OSError:
        pass
    try:
        found += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    try:
        found += re.findall(r"inet (\d+\.\d+\.\d+\.\d+)", subprocess.run(["ip", "-4", "addr"], text=True,
                                                                      capture_output=True).stdout)
    except OSError:
        pass
    return next((a for a in found if not ipaddress.ip_address(a).is_loopback and not ipaddress.ip_address(a)
                 .is_unspecified), None)


def test_default_server_answers_only_on_this_machine(tmp_path):
    address = own_address()
    if address is None:
        pytest.skip("this machine has no network address but loopback")
    with streamlit_server(tmp_path) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=5).close()


def test_chat_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        driver.get(server)
        send_message(driver, "Hello, who are you? 你是谁？")
        # the reply is done when the sidebar shows its speed
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMetricValue"]'), 90,
                   "the answer's tokens/s")
        messages = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stChatMessage"]')
        assert len(messages) == 2
        assert "Hello, who are you? 你是谁？" in messages[0].text
        assert "tok/s" in driver.find_element(By.CSS_SELECTOR, '[data-testid="stMetricValue"]').text
        shot = tmp_path / "web_demo.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("TINYMIND_SCREENSHOT"):
            shutil.copy(shot, os.environ["TINYMIND_SCREENSHOT"])


def send_message(driver, text):
    """Type text into the chat input and press Enter; again (at most twice) when a Streamlit rerun re-rendered
    the input meanwhile and swallowed it: the message is sent once it shows as a chat message."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    shown = lambda: any(text in m.text for m in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stChatMessage"]'))
    for _ in range(3):
        box = wait_until(lambda: driver.find_element(By.CSS_SELECTOR, '[data-testid="stChatInput"] textarea'),
                         60, "the chat input")
        try:
            box.send_keys(text)
            box.send_keys(Keys.ENTER)
            return wait_until(shown, 30, "the message in the chat")
        except Exception:       # noqa: BLE001 - a stale input (the page re-rendered), or the message not shown
            continue
    raise AssertionError(f"the chat input did not take {text!r}")


def choose(driver, label, option):
    """Pick option in the Streamlit selectbox labelled label (click it open, click the option)."""
    from selenium.webdriver.common.by import By
    box = wait_until(lambda: next(b for b in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSelectbox"]')
                                  if b.text.startswith(label)), 60, f"the {label!r} selectbox")
    box.find_element(By.CSS_SELECTOR, '[role="combobox"]').click()
    wait_until(lambda: next(o for o in driver.find_elements(By.CSS_SELECTOR, '[role="option"]')
                            if o.text.strip() == option), 30, f"the option {option!r}").click()


def test_chat_with_documents_shows_the_sources(server):
    """Retrieval switched on in the sidebar: the answer comes with its passages and their file."""
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        driver.get(server)
        choose(driver, "Answer from documents", "out/docs/mine")
        wait_until(lambda: "1 passage from 1 file" in driver.find_element(By.TAG_NAME, "body").text, 60,
                   "the documents' index")
        send_message(driver, "What kind of instrument is the oboe?")
        expander = wait_until(lambda: next(e for e in driver.find_elements(By.CSS_SELECTOR,
                                                                           '[data-testid="stExpander"]')
                                           if "Sources" in e.text), 90, "the answer's sources")
        assert "Sources (1 passage)" in expander.text
        expander.find_element(By.TAG_NAME, "summary").click()
        wait_until(lambda: "double-reed woodwind" in expander.text, 30, "the passage shown")
        assert "instruments.md" in expander.text


# the pixels of a text drawn on a canvas; U+10FFFD (private use) has a glyph in no font: the box
DRAW = """
const canvas = document.createElement("canvas");
canvas.width = 96; canvas.height = 40;
const ctx = canvas.getContext("2d");
ctx.font = "28px sans-serif";
return arguments[0].map(text => {
    ctx.clearRect(0, 0, 96, 40);
    ctx.fillText(text, 4, 32);
    return canvas.toDataURL();
});
"""


def test_chinese_renders_as_glyphs(tmp_path):
    need_browser()
    need_cjk_font()
    with chromium() as driver:
        driver.get("data:text/html;charset=utf-8,<p>TinyMind</p>")
        chinese, other_chinese, boxes, blank = driver.execute_script(DRAW, ["你好", "音乐", "\U0010fffd" * 2, ""])
    # boxes all look alike: two Chinese words drawn the same, or like the glyph no font has, are boxes
    as_boxes = chinese in (blank, boxes) or chinese == other_chinese
    assert not as_boxes, "Chinese is drawn as the boxes of missing glyphs; install fonts-wqy-microhei"
