"""Drive the demo in real headless Chromium (Debian's /usr/bin/chromium, through Playwright's Python client):
start the server in a subprocess, open the page, upload a photo, pick a target, run an edit.

Shared by the browser test (tests/test_demo_app.py) and the README's screenshot (scripts/screenshot_demo.py).
Playwright never downloads a browser here (no `playwright install`): it is pointed at the system's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LOCAL = ("http://127.0.0.1", "data:", "blob:")  # what the page may load; anything else would need the network


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_demo(log_path: Path, args: Sequence[str] = (), timeout: float = 120.0,
                 env: Optional[dict] = None) -> Iterator[str]:
    """`python -m apps.demo` on a free local port, until the block ends; yields its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "apps.demo", "--host", "127.0.0.1", "--port", str(port),
                                 *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the demo exited with code {proc.returncode}:\n{Path(log_path).read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the demo did not answer at {url} within {timeout:.0f} s:\n"
                                       f"{Path(log_path).read_text()}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def choose(page, elem_id: str, option: str) -> None:
    """Pick an option of a Gradio dropdown as a user does: open it, click the option."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def set_number(page, elem_id: str, value) -> None:
    """Type into the number box of a Gradio Number or Slider."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def click_va(page, valence: float, arousal: float) -> None:
    """Click the valence-arousal plane at (V, A), where Gradio's select event will read that pixel back."""
    from apps.demo.app import PLANE

    page.locator("#mode").get_by_label("valence-arousal", exact=True).check()
    img = page.locator("#va-plane img")
    img.wait_for()
    x, y = PLANE.to_pixel(valence, arousal)
    # Gradio maps a click to image pixels by the shown size (scaled down only, centred): do the inverse
    width, height, natural_width, natural_height = img.evaluate(
        "i => [i.getBoundingClientRect().width, i.getBoundingClientRect().height, i.naturalWidth, i.naturalHeight]")
    scale = min(width / natural_width, height / natural_height, 1)
    box = page.locator("#va textarea, #va input").first
    before = box.input_value()
    img.click(position={"x": (width - natural_width * scale) / 2 + x * scale,
                        "y": (height - natural_height * scale) / 2 + y * scale})
    if "{:.2f},{:.2f}".format(*PLANE.to_va(round(x), round(y))) != before:  # wait for the server's answer
        page.wait_for_function("([el, old]) => el.value !== old", arg=[box.element_handle(), before])


def dismiss_errors(page) -> None:
    """Close Gradio's error toasts (they would cover the plots)."""
    for button in page.get_by_test_id("toast-close").all():
        button.click()


def upload_photo(page, photo: Path, timeout_ms: int = 60_000) -> None:
    """Upload `photo` and wait until the page previews it."""
    shown = page.locator("#source img")
    before = shown.get_attribute("src") if shown.count() else None
    page.locator("#photo-upload input[type=file]").set_input_files(str(photo))
    page.wait_for_function("old => document.querySelector('#source img')?.src !== old", arg=before,
                           timeout=timeout_ms)


def edit_in_page(page, photo: Path, emotion: str, num_loop: int = 3, seed: int = 0, timeout_ms: int = 60_000) -> None:
    """Upload `photo`, target `emotion`, run one edit and wait until it is shown."""
    upload_photo(page, photo, timeout_ms)
    page.locator("#mode").get_by_label("emotion", exact=True).check()
    choose(page, "emotion", emotion)
    set_number(page, "seed", seed)
    set_number(page, "num-loop", num_loop)
    run_edit(page, f"Target {emotion}", timeout_ms)


def run_edit(page, expect: str, timeout_ms: int = 60_000) -> None:
    """Click Edit and wait until the summary says `expect` and the result, chart, strip and path are shown."""
    page.locator("#run").click()
    page.wait_for_function("text => document.querySelector('#summary').innerText.includes(text)", arg=expect,
                           timeout=timeout_ms)
    for selector in ("#result img", "#prob-chart img", "#strip img", "#va-path img"):
        page.wait_for_selector(selector, timeout=timeout_ms)
