"""The HTML report in a real browser: headless Chromium loads ``index.html`` and we check what a reader sees.

Run with ``make test-browser`` (marker ``browser``; not part of the default run). Needs Debian's
``chromium`` package (``apt-get install -y chromium``); the test is skipped, with the reason, where it
is absent. It drives Chromium through the DevTools protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-separated JSON), so no WebDriver or websocket package is needed.

By default the page is a report built here from tiny real inputs; ``PDN_REPORT=path/to/index.html``
checks an existing report instead (e.g. the demo's ``runs/demo/report/index.html``).

Run as a script, it saves the first screen of a report as a PNG (docs/report_summary.png)::

    python tests/test_report_browser.py runs/demo/report/index.html docs/report_summary.png
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

#: The first screen a reader sees (a laptop browser window).
VIEWPORT = (1280, 800)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


class Chromium:
    """A headless Chromium driven over the DevTools pipe; one page, one session."""

    def __init__(self, exe: str, viewport: tuple[int, int] = VIEWPORT, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self._profile = tempfile.TemporaryDirectory(prefix="pdn-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # Chromium reads commands from fd 3 and writes replies to fd 4.
        args = [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
                f"--user-data-dir={self._profile.name}", f"--window-size={viewport[0]},{viewport[1]}", "about:blank"]

        def _fds() -> None:  # in the child: move the pipe ends to 3 and 4 (copies first: either may be 3 or 4)
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self._proc = subprocess.Popen(args, pass_fds=(3, 4), preexec_fn=_fds, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=viewport[0], height=viewport[1],
                  deviceScaleFactor=1, mobile=False)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events that arrive meanwhile are kept)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        """Block until the event ``method`` arrives (or has already arrived)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            hit = next((e for e in self.events if e.get("method") == method), None)
            if hit is not None:
                return hit
            self.events.append(self._read_message(deadline))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def open(self, path: Path) -> None:
        """Load a local file and wait for its load event (all images fetched)."""
        self.call("Page.navigate", session=True, url=path.resolve().as_uri())
        self.wait_event("Page.loadEventFired")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(str(p.get("exceptionDetails", {}).get("text")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
        return out

    def screenshot(self, out: Path) -> None:
        """Save the first screen (the viewport) as PNG."""
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Every image: decoded (``img.decode()`` resolves only for a decodable image) and its natural size.
_IMAGES_JS = """Promise.all([...document.images].map(async (img) => {
  let ok = true; try { await img.decode(); } catch (e) { ok = false; }
  return {src: img.getAttribute('src'), decoded: ok, w: img.naturalWidth, h: img.naturalHeight};
}))"""
#: Where the summary sits relative to the first screen, and how much of it is readable there.
_SUMMARY_JS = """(() => {
  const s = document.getElementById('summary'); if (!s) return null;
  const r = s.getBoundingClientRect(); const items = [...s.querySelectorAll('li')];
  return {top: r.top, bottom: r.bottom, height: window.innerHeight, width: window.innerWidth,
          items: items.length, items_in_view: items.filter(li => li.getBoundingClientRect().bottom <= window.innerHeight).length,
          visible: getComputedStyle(s).visibility !== 'hidden' && getComputedStyle(s).display !== 'none',
          text: s.innerText.length};
})()"""


def _look(browser: Chromium, index: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[str]]:
    """Open ``index``; return its images, where its summary sits, and the errors logged while loading."""
    browser.events.clear()
    browser.open(index)
    return browser.evaluate(_IMAGES_JS), browser.evaluate(_SUMMARY_JS), browser.errors()


def _tiny_report(root: Path) -> Path:
    """A report from small real inputs of every kind (the fixtures of tests/test_report.py)."""
    from test_report import _attack, _certify, _data, _drive, _train_run

    from drivenet_patch.app.report import build_report

    src = root / "in"
    src.mkdir()
    inputs = [_data(src), _train_run(src), _drive(src), _attack(src), _attack(src, "atk_small", size=(1.0, 1.75),
                                                                                 scale=1.5),
              _attack(src, "atk_pv", model="patchvote", scale=0.5), _certify(src)]
    return Path(build_report(inputs, root / "report", notes=["a note about the settings"])["index"])


@pytest.mark.browser
def test_report_renders_in_chromium(tmp_path: Path) -> None:
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install -y chromium); make test-browser needs it")
    given = os.environ.get("PDN_REPORT")
    index = Path(given) if given else _tiny_report(tmp_path)
    assert index.is_file(), index
    with Chromium(exe) as browser:
        images, summary, errors = _look(browser, index)
        # The checks see a broken page: a PNG cut short and a missing one are both caught.
        broken = tmp_path / "broken"
        shutil.copytree(index.parent, broken)
        first, second = images[0]["src"], images[-1]["src"]
        (broken / first).write_bytes((broken / first).read_bytes()[:64])
        (broken / second).unlink()
        b_images, _, b_errors = _look(browser, broken / index.name)
    assert {i["src"] for i in b_images if not (i["decoded"] and i["w"] > 0)} == {first, second}
    assert any(second in e for e in b_errors), b_errors
    assert errors == [], errors  # no console errors, no failed loads
    assert images, "the report shows no images"
    bad = [i for i in images if not (i["decoded"] and i["w"] > 0 and i["h"] > 0)]
    assert bad == [], bad  # every image decodes to a real picture
    # The summary is on the first screen: it starts inside it and its first finding is readable there.
    assert summary is not None, "no #summary block"
    assert summary["visible"] and summary["text"] > 0 and summary["items"] > 0
    assert 0 <= summary["top"] < summary["height"] and summary["items_in_view"] >= 1, summary


def main(argv: list[str]) -> int:
    """``python tests/test_report_browser.py INDEX_HTML OUT_PNG``: the report's first screen as PNG."""
    if len(argv) != 2:
        print("usage: test_report_browser.py INDEX_HTML OUT_PNG", file=sys.stderr)
        return 2
    exe = find_chromium()
    if exe is None:
        print("error: no Chromium on PATH", file=sys.stderr)
        return 2
    with Chromium(exe) as browser:
        browser.open(Path(argv[0]))
        browser.screenshot(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
