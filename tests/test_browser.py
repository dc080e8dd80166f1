"""The `argen serve` page in a real browser: headless Chromium driven over the DevTools protocol.

CDP runs over ``--remote-debugging-pipe``: the browser reads commands on its file descriptor 3 and
writes replies and events on 4, each a JSON message ending in a NUL byte, so the standard library is
enough (no websocket client, no Selenium). Mouse events go through ``Input.dispatchMouseEvent``, as a
user's would. Screenshots land in the test's tmp_path, and in $ARGEN_SCREENSHOTS (as serve-*.png)
when that is set: ``ARGEN_SCREENSHOTS=docs/img pytest tests/test_browser.py``.
"""

import base64
import fcntl
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from argen.serve import Models, make_server, model_paths

CHROMIUM = os.environ.get("ARGEN_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to drive (apt-get install chromium, or set "
                                                          "ARGEN_CHROMIUM=/path/to/chrome)")
MODEL = "fmnist-var"
EDIT_MODEL = "fmnist-maskgit"
TEXT_MODEL = "shapes-raster"
WIDTH, HEIGHT = 1180, 760


class Browser:
    """One headless Chromium and one page in it, over the DevTools pipe."""

    def __init__(self, profile: Path):
        to_browser, self._in = os.pipe()      # we write commands into _in; the browser reads its fd 3
        self._out, from_browser = os.pipe()   # the browser writes its fd 4; we read _out
        # copies above fd 10, so that placing them at 3 and 4 in the child cannot overwrite one with the other
        r, w = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
        null = os.open(os.devnull, os.O_RDWR)
        args = [CHROMIUM, "--headless", "--remote-debugging-pipe", f"--user-data-dir={profile}", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        # posix_spawn, not subprocess's preexec_fn: moving fds in the child is safe with the server's threads
        # running here; every other fd of ours is close-on-exec and does not reach the browser
        self.pid = os.posix_spawn(CHROMIUM, args, os.environ, file_actions=[
            *[(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)],
            (os.POSIX_SPAWN_DUP2, r, 3), (os.POSIX_SPAWN_DUP2, w, 4)])
        for fd in (to_browser, from_browser, r, w, null):
            os.close(fd)
        self._id, self._replies, self._cond = 0, {}, threading.Condition()
        self.errors: list[str] = []  # uncaught exceptions in the page's JavaScript
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for method in ("Page.enable", "Runtime.enable"):
            self.send(method, session=True)
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)

    def _read(self) -> None:
        buf = b""
        while chunk := os.read(self._out, 1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                if msg.get("method") == "Runtime.exceptionThrown":
                    d = msg["params"]["exceptionDetails"]
                    self.errors.append(d.get("exception", {}).get("description") or d.get("text"))
                with self._cond:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    self._cond.notify_all()
        with self._cond:  # the browser is gone: wake whoever waits
            self._replies[None] = {"error": {"message": "the browser closed the pipe"}}
            self._cond.notify_all()

    def send(self, method: str, session: bool = False, timeout: float = 30, **params):
        with self._cond:
            self._id += 1
            id_ = self._id
        msg = {"id": id_, "method": method, "params": params, **({"sessionId": self.session} if session else {})}
        os.write(self._in, json.dumps(msg).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: id_ in self._replies or None in self._replies, timeout):
                raise TimeoutError(f"no reply to {method} in {timeout} s")
            reply = self._replies.pop(id_, None) or self._replies[None]
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']['message']}")
        return reply["result"]

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 60, what: str = ""):
        """Poll until the expression is truthy; its value."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if v := self.js(expression):
                return v
            time.sleep(0.1)
        raise TimeoutError(f"{what or expression}: not true after {timeout} s; page says: "
                           f"{self.js('document.getElementById(`error`).textContent')!r}")

    def open(self, url: str) -> None:
        self.send("Page.navigate", session=True, url=url)
        self.wait("document.body && document.body.dataset.ready === '1'", 30, "the page loads its models")

    def center(self, selector: str) -> tuple[float, float]:
        r = self.js(f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
                    " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        return r[0], r[1]

    def mouse(self, kind: str, x: float, y: float, buttons: int = 1) -> None:
        self.send("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left",
                  buttons=buttons, clickCount=1)

    def click(self, selector: str) -> None:
        x, y = self.center(selector)
        self.mouse("mouseMoved", x, y, 0)
        self.mouse("mousePressed", x, y)
        self.mouse("mouseReleased", x, y, 0)

    def set(self, selector: str, value) -> None:
        """Set a form field as a user would leave it, and tell the page (a change event)."""
        self.js(f"(() => {{ const e = document.querySelector({selector!r}); e.value = {json.dumps(str(value))};"
                " e.dispatchEvent(new Event('change')); })()")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", session=True, format="png")["data"]))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        deadline = time.time() + 10
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.time() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.1)
        for fd in (self._in, self._out):
            os.close(fd)


@pytest.fixture(scope="module")
def server():
    srv = make_server(Models(model_paths()), "127.0.0.1", 0)  # what `argen serve` offers
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}/"
    finally:
        srv.shutdown()
        srv.server_close()
        srv.app.close()
        thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """The server samples in this process: one torch thread (see conftest)."""


def keep(shot: Path) -> None:
    """Copy a screenshot to $ARGEN_SCREENSHOTS, for the README."""
    if out := os.environ.get("ARGEN_SCREENSHOTS"):
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(out) / shot.name)


# How many distinct grey levels an <img> has, drawn onto a canvas in the page: a blank or one-colour
# image (a broken decode, an empty grid) has one or two.
GREYS = """(() => {
  const img = document.getElementById(%r);
  if (!img.complete || !img.naturalWidth) return 0;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data, seen = new Set();
  for (let i = 0; i < px.length; i += 4) seen.add(px[i]);
  return seen.size;
})()"""


def generate(browser, url: str) -> dict:
    """Open the page, pick the model, all classes, 4 each, and press Generate; the grid's size."""
    browser.open(url)
    browser.set("#model", MODEL)
    assert browser.js("document.getElementById('model-info').textContent").startswith("var · 28×28")
    browser.set("#label", "all")
    browser.set("#n", 4)
    browser.set("#seed", 3)
    browser.click("#generate")
    browser.wait(f"{GREYS % 'grid'} > 1 && !document.getElementById('generate').disabled", 120, "the grid appears")
    return browser.js("(() => { const g = document.getElementById('grid');"
                      " return {w: g.naturalWidth, h: g.naturalHeight, shown: g.clientWidth}; })()")


def test_generate_shows_the_grid(server, browser, tmp_path):
    grid = generate(browser, server)
    # 10 classes x 4: 28x28 images drawn twice as large with 1 px between, one column per class
    assert (grid["w"], grid["h"]) == (10 * 57 + 1, 4 * 57 + 1) and grid["shown"] > grid["w"]
    assert browser.js(GREYS % "grid") > 20
    status = browser.js("document.getElementById('status').textContent")
    assert status.startswith("40 images in ") and "fmnist-var" in status
    assert browser.js("document.getElementById('dl-npz').href").endswith(".npz")
    assert not browser.errors
    keep(browser.screenshot(tmp_path / "serve-sample.png"))


def test_inpaint_a_painted_region(server, browser, tmp_path):
    generate(browser, server)
    # click the first image of the second row (class 0, a T-shirt): it opens in the inpainting view
    x, y = browser.js("(() => { const r = document.getElementById('grid').getBoundingClientRect();"
                      " return [r.x + r.width * 0.5 / 10, r.y + r.height * 1.5 / 4]; })()")
    browser.mouse("mouseMoved", x, y, 0)
    browser.mouse("mousePressed", x, y)
    browser.mouse("mouseReleased", x, y, 0)
    browser.wait("document.getElementById('view-inpaint').classList.contains('active')", 10, "the inpaint view")
    assert browser.js("document.getElementById('generate').textContent") == "Inpaint"
    assert browser.js("document.getElementById('label').value") == "0"  # the clicked image's class
    # regenerate the lower half as trousers with MaskGIT (its single-scale tokens keep the rest as it is)
    browser.set("#model", EDIT_MODEL)
    browser.set("#label", 1)
    # paint the lower half of the image with the brush: a zig-zag drag across the canvas
    r = browser.js("(() => { const r = document.getElementById('overlay').getBoundingClientRect();"
                   " return [r.x, r.y, r.width, r.height]; })()")
    browser.mouse("mouseMoved", r[0] + 20, r[1] + r[3] * 0.56, 0)
    browser.mouse("mousePressed", r[0] + 20, r[1] + r[3] * 0.56)
    for i in range(1, 15):
        browser.mouse("mouseMoved", r[0] + 20 + (r[2] - 40) * (i % 2), r[1] + r[3] * (0.56 + 0.03 * i))
    browser.mouse("mouseReleased", r[0] + r[2] - 20, r[1] + r[3] * 0.95, 0)
    painted = browser.js("(() => { const d = document.getElementById('overlay').getContext('2d')"
                         ".getImageData(0, 0, 320, 320).data; let n = 0;"
                         " for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n / (320 * 320); })()")
    assert 0.2 < painted < 0.6  # the lower part, not nothing and not everything
    browser.click("#generate")
    browser.wait(f"{GREYS % 'edit-grid'} > 1 && !document.getElementById('generate').disabled", 120,
                 "the inpainted images appear")
    assert browser.js(GREYS % "edit-grid") > 20
    assert browser.js("document.getElementById('edit-grid').naturalWidth") == 2 * 57 + 1  # four edits, 2 x 2
    assert EDIT_MODEL in browser.js("document.getElementById('status').textContent")
    assert not browser.errors
    keep(browser.screenshot(tmp_path / "serve-inpaint.png"))


def test_a_bad_input_shows_the_servers_error(server, browser, tmp_path):
    browser.open(server)
    browser.set("#model", MODEL)
    browser.set("#label", 1)
    browser.set("#n", 500)
    browser.click("#generate")
    text = browser.wait("document.getElementById('error').textContent", 30, "an error message")
    assert text == "n must be an integer in 1..64, got 500"  # the server's line, word for word
    assert browser.js("getComputedStyle(document.getElementById('error')).display") != "none"
    browser.set("#n", 4)
    browser.set("#seed", -1)
    browser.click("#generate")
    browser.wait("document.getElementById('error').textContent.startsWith('seed')", 30, "the seed error")
    browser.screenshot(tmp_path / "serve-error.png")
    browser.set("#seed", 0)  # and a good request clears it
    browser.click("#generate")
    browser.wait(f"{GREYS % 'grid'} > 1", 60, "the grid after the error")
    assert browser.js("document.getElementById('error').textContent") == ""
    assert not browser.errors


def test_a_text_model_takes_a_prompt(server, browser, tmp_path):
    browser.open(server)
    browser.set("#model", TEXT_MODEL)
    assert browser.js("document.getElementById('model-info').textContent") == "raster · 32×32 · text-to-image"
    assert browser.js("document.getElementById('class-box').hidden")  # a prompt box instead of the classes
    assert not browser.js("document.getElementById('prompt-box').hidden")
    browser.set("#prompt", "a purple circle")
    browser.click("#generate")
    text = browser.wait("document.getElementById('error').textContent", 30, "an error message")
    assert text.startswith("prompts: unknown word(s) 'purple'")  # the server's line
    browser.set("#prompt", "two green triangles")
    browser.set("#n", 4)
    browser.click("#generate")
    browser.wait(f"{GREYS % 'grid'} > 1 && !document.getElementById('generate').disabled", 120, "the grid appears")
    assert browser.js("document.getElementById('error').textContent") == ""
    assert browser.js("document.getElementById('grid').naturalWidth") == 4 * 65 + 1  # 32 px drawn twice, one row
    assert browser.js("document.getElementById('status').textContent").startswith("4 images in ")
    keep(browser.screenshot(tmp_path / "serve-text.png"))
    # a sample opens for inpainting under its own prompt, and the class box stays hidden
    x, y = browser.center("#grid")
    browser.set("#prompt", "a red circle")
    browser.mouse("mouseMoved", x, y, 0)
    browser.mouse("mousePressed", x, y)
    browser.mouse("mouseReleased", x, y, 0)
    browser.wait("document.getElementById('view-inpaint').classList.contains('active')", 10, "the inpaint view")
    assert browser.js("document.getElementById('prompt').value") == "two green triangles"
    assert browser.js("document.getElementById('class-box').hidden")
    # and back to a class model: the class box returns
    browser.set("#model", MODEL)
    assert not browser.js("document.getElementById('class-box').hidden")
    assert browser.js("document.getElementById('prompt-box').hidden")
    assert not browser.errors


def test_the_page_is_self_contained():
    page = (Path(__file__).parent.parent / "argen" / "web" / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script src" not in page  # no CDN: works offline
