"""Drive headless Chromium over the DevTools protocol, on a pipe (no extra Python package).

Chromium started with ``--remote-debugging-pipe`` reads protocol messages (JSON, each ended by a NUL
byte) on its file descriptor 3 and writes replies and events on 4. ``Browser`` starts it with a
fresh profile, ``Browser.page()`` opens a tab; a ``Page`` navigates, evaluates JavaScript (waiting
on conditions: promises that settle on page events, never fixed sleeps), collects the dialogs the
page opens and the exceptions it throws, and takes screenshots.

    with Browser() as browser:
        page = browser.page(width=1280, height=900)
        page.goto("file:///tmp/results.html")
        page.wait_for("document.body.dataset.ready === 'true'")
        page.screenshot("results.png")
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",  # a script's click() may start a player
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


# Puts our pipe ends on the descriptors 3 and 4 Chromium expects, then becomes Chromium. (A shell
# could do it, but dash only redirects descriptors 0-9; through 100 and 101 neither end clobbers the other.)
LAUNCHER = (
    "import os, sys; read, write = int(sys.argv[1]), int(sys.argv[2]); os.dup2(read, 100); "
    "os.dup2(write, 101); os.dup2(100, 3); os.dup2(101, 4); os.close(100); os.close(101); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable: $MUSE_CHROMIUM, else the first on PATH; None if none."""
    named = os.environ.get("MUSE_CHROMIUM")
    if named:
        return named
    return next(filter(None, (shutil.which(name) for name in CHROMIUM_NAMES)), None)


class BrowserError(RuntimeError):
    """The browser died, answered with an error, or a wait ran out."""


class Browser:
    """A headless Chromium process with its own temporary profile; a context manager."""

    def __init__(self, executable: str | None = None, timeout: float = 30.0):
        executable = executable or find_chromium()
        if executable is None:
            raise BrowserError("no chromium executable found (apt-get install chromium)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="muse-chromium-")
        self.log = Path(self.profile) / "chromium.log"
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        flags = [*FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        launch = [sys.executable, "-c", LAUNCHER, str(to_browser_read), str(from_browser_write), executable]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [*launch, *flags],
                pass_fds=(to_browser_read, from_browser_write),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._listeners: list = []
        self._closed = False
        self._condition = threading.Condition()
        self._write_lock = threading.Lock()
        threading.Thread(target=self._read_messages, daemon=True).start()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_messages(self) -> None:
        buffer = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as stream:
            while chunk := stream.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    self._dispatch(json.loads(raw))
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _dispatch(self, message: dict) -> None:
        with self._condition:
            if "id" in message:
                self._replies[message["id"]] = message
            else:
                for listener in list(self._listeners):
                    listener(message)
            self._condition.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=None) -> dict:
        """Send one protocol command and wait for its reply; raises BrowserError on an error reply."""
        with self._write_lock:
            self._next_id += 1
            number = self._next_id
            message = {"id": number, "method": method, "params": params or {}}
            if session:
                message["sessionId"] = session
            try:
                os.write(self._to_browser, json.dumps(message).encode() + b"\0")
            except BrokenPipeError:
                raise BrowserError(
                    f"{method}: the browser exited; its log ends:\n{self.log_tail()}"
                ) from None
        with self._condition:
            arrived = self._condition.wait_for(
                lambda: number in self._replies or self._closed, timeout or self.timeout
            )
            reply = self._replies.pop(number, None)
        if not arrived or reply is None:
            raise BrowserError(f"{method}: no reply ({'browser exited' if self._closed else 'timed out'})")
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply["result"]

    def log_tail(self, characters: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-characters:]
        except OSError:
            return "(no log)"

    def wait_for_event(self, predicate, timeout=None) -> None:
        """Block until ``predicate()`` (checked whenever a message arrives) is true."""
        with self._condition:
            if not self._condition.wait_for(lambda: predicate() or self._closed, timeout or self.timeout):
                raise BrowserError("timed out waiting for the page")

    def page(self, width: int = 1280, height: int = 900) -> Page:
        """A new tab of ``width`` x ``height`` CSS pixels."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, session, width, height)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("Browser.close", timeout=5)
            except BrowserError:
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        os.close(self._to_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab: its dialogs (alert/confirm/prompt, dismissed and recorded), uncaught exceptions, console errors."""

    def __init__(self, browser: Browser, session: str, width: int, height: int):
        self.browser, self.session = browser, session
        self.dialogs: list[str] = []
        self.exceptions: list[str] = []
        self.console_errors: list[str] = []
        self._loaded = 0
        browser._listeners.append(self._on_event)
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def send(self, method: str, params: dict | None = None, timeout=None) -> dict:
        return self.browser.send(method, params, self.session, timeout)

    def _on_event(self, message: dict) -> None:
        if message.get("sessionId") != self.session:
            return
        method, params = message["method"], message.get("params", {})
        if method == "Page.javascriptDialogOpening":
            self.dialogs.append(params.get("message", ""))
            threading.Thread(  # answering from the reader thread would block it
                target=self.send, args=("Page.handleJavaScriptDialog", {"accept": False}), daemon=True
            ).start()
        elif method == "Runtime.exceptionThrown":
            self.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console_errors.append(json.dumps(params.get("args", []))[:500])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.console_errors.append(params["entry"].get("text", "")[:500])
        elif method == "Page.loadEventFired":
            self._loaded += 1

    def goto(self, url: str, timeout=None) -> None:
        """Navigate and wait for the page's load event."""
        before = self._loaded
        reply = self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise BrowserError(f"cannot open {url}: {reply['errorText']}")
        self.browser.wait_for_event(lambda: self._loaded > before, timeout)

    def navigating(self, expression: str, timeout=None) -> None:
        """Evaluate ``expression`` (which makes the page navigate or reload) and wait for the new load event."""
        before = self._loaded
        self.send("Runtime.evaluate", {"expression": expression})
        self.browser.wait_for_event(lambda: self._loaded > before, timeout)

    def evaluate(self, expression: str, timeout=None):
        """The value of a JavaScript expression (awaited when it is a promise), as JSON data."""
        reply = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression[:80]}...: {reply['exceptionDetails'].get('text')}")
        return reply["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 20.0):
        """Wait until the JavaScript expression ``condition`` is truthy (checked on every animation
        frame and DOM change inside the page); returns its value."""
        script = f"""new Promise((resolve, reject) => {{
            const check = () => {{ try {{ return ({condition}); }} catch (e) {{ return false; }} }};
            const first = check();
            if (first) {{ resolve(first); return; }}
            const observer = new MutationObserver(() => {{ const v = check(); if (v) finish(v); }});
            const timer = setTimeout(() => {{ observer.disconnect(); reject(new Error("timed out")); }}, {int(timeout * 1000)});
            const finish = (v) => {{ clearTimeout(timer); observer.disconnect(); resolve(v); }};
            observer.observe(document, {{subtree: true, childList: true, attributes: true}});
            const poll = () => {{ const v = check(); if (v) finish(v); else requestAnimationFrame(poll); }};
            requestAnimationFrame(poll);
        }})"""
        return self.evaluate(script, timeout=timeout + 5)

    def screenshot(self, path: str | os.PathLike, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page, up to 4000 px tall) written to ``path``."""
        params: dict = {"format": "png"}
        if full_page:
            size = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params |= {
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size[0], "height": min(size[1], 4000), "scale": 1},
            }
        data = base64.b64decode(self.send("Page.captureScreenshot", params)["data"])
        Path(path).write_bytes(data)
        return Path(path)


def keep_screenshot(path: str | os.PathLike) -> Path | None:
    """Copy a screenshot into $MUSE_SCREENSHOTS_DIR when it is set (how docs/ gets the tests' images)."""
    folder = os.environ.get("MUSE_SCREENSHOTS_DIR")
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(path, Path(folder) / Path(path).name))
