"""The study's web server: the jsPsych pages, the stimuli, and an API that stores each answer as it is given.

Routes: ``/`` the experiment; ``/static/*`` our page files; ``/jspsych/*`` jsPsych from
apps/study/node_modules (``npm ci --prefix apps/study``; never a CDN); ``/stimuli/<name>`` only the
files the stimulus manifest lists; ``POST /api/consent``, ``GET /api/session/<id>``,
``POST /api/session/<id>/response``; ``GET /admin/export.csv`` behind a token; ``GET /healthz``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from apps.study.db import NotFound, Refused, StudyDB
from apps.study.plan import (
    DUMMY_TRIALS,
    MANIFEST,
    TRIALS_PER_PARTICIPANT,
    check_design,
    load_stimuli,
    make_plan,
)

APP_DIR = Path(__file__).resolve().parent
STATIC = APP_DIR / "static"
NODE_MODULES = APP_DIR / "node_modules"
NPM_COMMAND = "npm ci --prefix apps/study"
# what /jspsych/<name> serves: jsPsych 8's browser (UMD) builds, which define window globals
JSPSYCH_FILES = {
    "jspsych.js": "jspsych/dist/index.browser.min.js",
    "jspsych.css": "jspsych/css/jspsych.css",
    **{f"{p}.js": f"@jspsych/{p}/dist/index.browser.min.js"
       for p in ("plugin-html-button-response", "plugin-html-keyboard-response", "plugin-instructions",
                 "plugin-survey-text", "plugin-call-function")},
}
MAX_BODY = 2048  # bytes; the largest legitimate body is ~200
PARTICIPANT_ID = r"^[A-Za-z0-9_.@:-]{1,128}$"
MAX_RT_MS = 24 * 3600 * 1000


@dataclass
class Settings:
    stimuli: Path
    db: Path
    admin_token: str
    n_trials: int = TRIALS_PER_PARTICIPANT
    n_dummies: int = DUMMY_TRIALS
    seed: int = 0
    completion_code: Optional[str] = None  # one code for everyone (Prolific); None: a random code per session
    node_modules: Path = NODE_MODULES


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    participant_id: str = Field(pattern=PARTICIPANT_ID)
    consent: Literal[True]
    session_id: Optional[str] = Field(default=None, max_length=64)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    trial_index: int = Field(ge=0)
    choice: Literal["left", "right"]
    rt_ms: float = Field(ge=0, le=MAX_RT_MS)
    device: Literal["keyboard", "mouse"]


def missing_jspsych(node_modules: Path) -> list[str]:
    return [rel for rel in JSPSYCH_FILES.values() if not (node_modules / rel).is_file()]


async def read_body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The JSON body as `model`: 413 when too large, 415 when not JSON, 400 when malformed, 422 when invalid."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise HTTPException(413, f"body larger than {MAX_BODY} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"body larger than {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"malformed JSON: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, json.loads(exc.json(include_url=False, include_input=False))) from exc


def create_app(settings: Settings) -> FastAPI:
    stimuli = load_stimuli(settings.stimuli)
    check_design(stimuli.manifest, settings.n_trials, settings.n_dummies)
    stimuli_sha = hashlib.sha256((stimuli.root / MANIFEST).read_bytes()).hexdigest()
    db = StudyDB(settings.db)
    missing = missing_jspsych(settings.node_modules)
    if missing:
        print(f"study: jsPsych is not installed ({settings.node_modules / missing[0]} missing): run "
              f"`{NPM_COMMAND}`; the API works, the experiment pages answer 503 until then", file=sys.stderr)
    app = FastAPI(title="EmoEditor 2AFC study", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def client_session(session_id: str) -> dict:
        s = db.session(session_id)
        trials = [{"trial_index": t["trial_index"], "target": t["target"], "left": f"/stimuli/{t['left_file']}",
                   "right": f"/stimuli/{t['right_file']}"} for t in s["plan"]]
        return {"session_id": session_id, "participant_id": s["participant_id"], "n_trials": s["n_trials"],
                "next_index": s["next_index"], "trials": trials, "completion_code": s["completion_code"]}

    def completion_code() -> str:
        return settings.completion_code or secrets.token_hex(4).upper()

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)  # none: keeps browsers' automatic request out of the error log

    @app.get("/", response_class=HTMLResponse)
    def index():
        gone = missing_jspsych(settings.node_modules)
        if gone:
            return HTMLResponse(f"<h1>Study not ready</h1><p>jsPsych is not installed: run <code>{NPM_COMMAND}</code> "
                                f"and restart the server ({gone[0]} is missing).</p>", status_code=503)
        return FileResponse(STATIC / "index.html")

    @app.get("/jspsych/{name}")
    def jspsych(name: str):
        if name not in JSPSYCH_FILES:
            raise HTTPException(404, "no such file")
        path = settings.node_modules / JSPSYCH_FILES[name]
        if not path.is_file():
            raise HTTPException(503, f"jsPsych is not installed: run `{NPM_COMMAND}`")
        return FileResponse(path)

    @app.get("/stimuli/{name}")
    def stimulus(name: str):
        if name not in stimuli.files:  # only manifest names: no path ever reaches the file system
            raise HTTPException(404, "no such stimulus")
        return FileResponse(stimuli.images / name, media_type="image/png")

    @app.post("/api/consent")
    async def consent(request: Request):
        body = await read_body(request, Consent)

        def plan() -> list[dict]:
            return make_plan(stimuli.manifest, body.participant_id, settings.n_trials, settings.n_dummies,
                             settings.seed)

        try:
            session_id, resumed = await run_in_threadpool(
                db.consent, body.participant_id, body.session_id, plan, settings.seed, stimuli_sha,
                request.headers.get("user-agent", ""))
        except Refused as exc:
            raise HTTPException(409, str(exc)) from exc
        return {"resumed": resumed, **await run_in_threadpool(client_session, session_id)}

    @app.get("/api/session/{session_id}")
    async def session(session_id: str):
        try:
            return await run_in_threadpool(client_session, session_id)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.post("/api/session/{session_id}/response")
    async def respond(session_id: str, request: Request):
        body = await read_body(request, Answer)
        try:
            return await run_in_threadpool(db.respond, session_id, body.trial_index, body.choice, body.rt_ms,
                                           body.device, completion_code)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from exc
        except Refused as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get("/admin/export.csv")
    async def export(request: Request, token: Optional[str] = None):
        given = token or request.headers.get("authorization", "").removeprefix("Bearer ").strip() or None
        if given is None:
            raise HTTPException(401, "admin token required (Authorization: Bearer <token> or ?token=)")
        if not secrets.compare_digest(given.encode(), settings.admin_token.encode()):
            raise HTTPException(403, "wrong admin token")
        columns, rows = await run_in_threadpool(db.export_rows)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        writer.writerows(rows)
        return Response(buf.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": "attachment; filename=study_responses.csv"})

    return app
