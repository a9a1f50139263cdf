"""One whole participant session in real headless Chromium (Debian's package) driven by Playwright: consent,
instructions, trials answered by keyboard and mouse, a reload that resumes, the completion code; then the rows
in SQLite and a screenshot of a trial (also copied to test-artifacts/ for CI)."""

import shutil
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from apps.study.server import JSPSYCH_FILES, NODE_MODULES, NPM_COMMAND  # noqa: E402
from apps.study.testing import REPO, ServerProcess, make_stimuli  # noqa: E402

pytestmark = pytest.mark.apps
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TRIALS, DUMMIES = 14, 6
RELOAD_AT = 5  # reload the page after this many answers
ARTIFACTS = REPO / "test-artifacts"

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} missing: install Debian's chromium package (apt-get install chromium)",
                allow_module_level=True)
if any(not (NODE_MODULES / rel).is_file() for rel in JSPSYCH_FILES.values()):
    pytest.skip(f"jsPsych missing in {NODE_MODULES}: run `{NPM_COMMAND}`", allow_module_level=True)


def answer_trial(page, index, screenshot=None):
    """Even trials by keyboard (F = left, J = right), odd ones by clicking; returns the side chosen."""
    side = "left" if index % 4 in (0, 1) else "right"
    page.locator(f"#study-{side} img").wait_for(state="visible")
    page.wait_for_function("() => [...document.querySelectorAll('.study-choice img')].every(i => i.complete "
                           "&& i.naturalWidth > 0)")
    assert page.locator(".study-progress").inner_text().endswith(f"trial {index + 1} of {TRIALS}")
    if screenshot:
        page.screenshot(path=str(screenshot))
    if index % 2 == 0:
        page.keyboard.press("f" if side == "left" else "j")
    else:
        page.click(f"#study-{side}")
    return side


def test_full_session_in_chromium(tmp_path):
    stimuli = make_stimuli(tmp_path / "study")
    db = tmp_path / "study.sqlite"
    shot = tmp_path / "trial.png"
    chosen = []
    with ServerProcess(stimuli, db, "token", ["--trials", str(TRIALS), "--dummy_trials", str(DUMMIES)]) as server, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/?PROLIFIC_PID=browser_participant")
            page.get_by_role("button", name="I agree").click()
            for _ in range(4):  # the four instruction pages
                page.locator("#jspsych-instructions-next").click()
            for index in range(RELOAD_AT):
                chosen.append(answer_trial(page, index, shot if index == 0 else None))
            page.wait_for_function(f"() => document.querySelector('.study-progress')?.innerText.endsWith("
                                   f"'trial {RELOAD_AT + 1} of {TRIALS}')")
            page.reload()  # resumes without a second consent
            page.get_by_role("button", name="Continue").click()
            for index in range(RELOAD_AT, TRIALS):
                chosen.append(answer_trial(page, index))
            code = page.locator("#completion-code").inner_text(timeout=15_000).strip()
            assert not errors, errors
        finally:
            browser.close()
    with sqlite3.connect(db) as con:
        stored = con.execute("SELECT trial_index, choice, device, rt_ms FROM responses ORDER BY trial_index")
        stored = stored.fetchall()
        session = con.execute("SELECT participant_id, completion_code, completed_at FROM sessions").fetchall()
    assert [(i, c, d) for i, c, d, _ in stored] == [
        (i, chosen[i], "keyboard" if i % 2 == 0 else "mouse") for i in range(TRIALS)]
    assert all(rt > 0 for *_, rt in stored)
    assert session == [("browser_participant", code, session[0][2])] and session[0][2] and len(code) == 8
    assert shot.stat().st_size > 10_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "study_trial.png")
