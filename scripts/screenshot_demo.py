"""The README's screenshot of the web demo: start `python -m apps.demo` on the miniature, drive it in
headless Chromium (upload a photo, click the valence-arousal plane, edit) and save the page.

examples:
    python scripts/screenshot_demo.py                       # -> docs/demo_screenshot.png
    python scripts/screenshot_demo.py --photo rocket --va 7.6,6.2 --out /tmp/demo.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # apps/ lives next to scripts/, outside the installed package


def build_parser() -> argparse.ArgumentParser:
    from emoeditor.config import HelpFormatter

    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default=str(REPO / "docs" / "demo_screenshot.png"), help="the screenshot (PNG)")
    p.add_argument("--photo", default="coffee", help="scikit-image photo to upload")
    p.add_argument("--va", default="2.6,3.2", help="valence,arousal point to click (default: near sadness)")
    p.add_argument("--num_loop", type=int, default=10, help="at most this many critic iterations")
    p.add_argument("--seed", type=int, default=0, help="seed of the edit")
    return p


def screenshot(args: argparse.Namespace) -> Path:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from apps.demo.browser import (
        click_va,
        dismiss_errors,
        launch_chromium,
        run_edit,
        running_demo,
        set_number,
        upload_photo,
    )
    from emoeditor.data.toy import load_toy_photo
    from emoeditor.valence_arousal import parse_va

    point = parse_va(args.va)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / f"{args.photo}.png"
        Image.fromarray(load_toy_photo(args.photo)).save(photo)
        with running_demo(Path(tmp) / "demo.log") as url, sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url)
                upload_photo(page, photo)
                click_va(page, *point)
                set_number(page, "seed", args.seed)
                set_number(page, "num-loop", args.num_loop)
                run_edit(page, "Target")
                dismiss_errors(page)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
            finally:
                browser.close()
    print(f"wrote {out}")
    return out


def main(argv=None) -> Path:
    return screenshot(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
