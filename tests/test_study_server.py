"""The study server over real HTTP on 127.0.0.1: concurrency, one participation per id, resume after a dropped
connection and after a crash, path traversal, bad bodies, the admin export's token."""

import http.client
import json
import socket
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from apps.study.plan import load_stimuli, make_plan  # noqa: E402
from apps.study.server import NPM_COMMAND, Settings, create_app  # noqa: E402
from apps.study.testing import ServerProcess, make_stimuli  # noqa: E402

pytestmark = pytest.mark.apps
TRIALS, DUMMIES = 14, 6  # 8 real + 6 dummies keeps 50 sessions quick
TOKEN = "test-admin-token"
EXTRA = ["--trials", str(TRIALS), "--dummy_trials", str(DUMMIES), "--seed", "3"]


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory):
    return make_stimuli(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="module")
def server(stimuli, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "study.sqlite"
    with ServerProcess(stimuli, db, TOKEN, EXTRA) as s:
        s.db = db
        yield s


def rows(db, sql, *args):
    with sqlite3.connect(db) as con:
        return con.execute(sql, args).fetchall()


def consent(client, pid, session_id=None):
    body = {"participant_id": pid, "consent": True}
    if session_id:
        body["session_id"] = session_id
    return client.post("/api/consent", json=body)


def answer(client, session_id, index, choice="left", device="mouse"):
    return client.post(f"/api/session/{session_id}/response",
                       json={"trial_index": index, "choice": choice, "rt_ms": 812.5, "device": device})


def choice_for(pid, index):
    return "left" if (sum(map(ord, pid)) + index) % 3 else "right"


def test_fifty_concurrent_participants(server):
    """50 participants at once, each retrying every third answer: exactly 50 x 14 rows, each as sent."""
    start = threading.Barrier(50)

    def participant(i):
        pid = f"conc{i:02d}"
        with httpx.Client(base_url=server.url, timeout=60) as c:
            start.wait()
            s = consent(c, pid).json()
            for t in s["trials"]:
                first = answer(c, s["session_id"], t["trial_index"], choice_for(pid, t["trial_index"]))
                assert first.status_code == 200, first.text
                if t["trial_index"] % 3 == 0:  # a retried request: stored once
                    again = answer(c, s["session_id"], t["trial_index"], choice_for(pid, t["trial_index"]))
                    assert again.status_code == 200 and again.json()["stored"] is False
            return pid, s["session_id"], first.json()["completion_code"]

    with ThreadPoolExecutor(50) as pool:
        done = list(pool.map(participant, range(50)))
    sessions = {sid: pid for pid, sid, _ in done}
    assert len(sessions) == 50 and all(code for _, _, code in done)
    stored = rows(server.db, "SELECT session_id, trial_index, choice FROM responses WHERE session_id IN "
                             f"({','.join('?' * 50)})", *sessions)
    assert len(stored) == 50 * TRIALS
    assert {(sid, i) for sid, i, _ in stored} == {(sid, i) for sid in sessions for i in range(TRIALS)}
    assert all(choice == choice_for(sessions[sid], i) for sid, i, choice in stored)
    completed = rows(server.db, "SELECT COUNT(*) FROM sessions WHERE completed_at IS NOT NULL AND participant_id "
                                "LIKE 'conc%'")[0][0]
    assert completed == 50


def test_plan_is_fixed_at_consent(server, stimuli):
    """The stored plan is the seeded draw for this participant, and a resume serves the same trials."""
    with httpx.Client(base_url=server.url) as c:
        s = consent(c, "planned").json()
        again = consent(c, "planned", s["session_id"]).json()
    assert again["resumed"] is True and again["trials"] == s["trials"]
    expected = make_plan(load_stimuli(stimuli).manifest, "planned", TRIALS, DUMMIES, seed=3)
    stored = rows(server.db, "SELECT trial_index, kind, stimulus_id, left_file, right_file, ours_side, correct_side "
                             "FROM plan WHERE session_id = ? ORDER BY trial_index", s["session_id"])
    assert stored == [(t["trial_index"], t["kind"], t["stimulus_id"], t["left_file"], t["right_file"],
                       t["ours_side"], t["correct_side"]) for t in expected]
    assert sum(t["kind"] == "dummy" for t in expected) == DUMMIES


def test_second_participation_refused(server):
    with httpx.Client(base_url=server.url) as c:
        s = consent(c, "twice").json()
        assert consent(c, "twice").status_code == 409  # another browser: no session token
        assert consent(c, "twice", "not-the-token").status_code == 409
        for i in range(TRIALS):
            assert answer(c, s["session_id"], i).status_code == 200
        refused = consent(c, "twice", s["session_id"])  # finished: even the holder cannot start again
        assert refused.status_code == 409 and "already completed" in refused.json()["detail"]
    assert rows(server.db, "SELECT COUNT(*) FROM sessions WHERE participant_id = 'twice'")[0][0] == 1


def raw_post_and_drop(url, path, body):
    """Send a whole request and close the socket without reading the reply: a connection dropped mid-request."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data)


def test_resume_after_dropped_connection(server):
    with httpx.Client(base_url=server.url) as c:
        s = consent(c, "dropper").json()
        for i in range(4):
            answer(c, s["session_id"], i)
        raw_post_and_drop(server.url, f"/api/session/{s['session_id']}/response",
                          {"trial_index": 4, "choice": "right", "rt_ms": 1.0, "device": "keyboard"})
        # the reloaded page asks where to go on, and resends the answer it never saw confirmed
        resumed = c.get(f"/api/session/{s['session_id']}").json()
        assert resumed["next_index"] in (4, 5) and resumed["trials"] == s["trials"]
        assert answer(c, s["session_id"], 4, "right", "keyboard").status_code == 200
        for i in range(5, TRIALS):
            assert answer(c, s["session_id"], i).status_code == 200
    stored = rows(server.db, "SELECT trial_index, choice FROM responses WHERE session_id = ? ORDER BY trial_index",
                  s["session_id"])
    assert [i for i, _ in stored] == list(range(TRIALS)) and stored[4] == (4, "right")


def test_resume_after_server_restart(stimuli, tmp_path):
    db = tmp_path / "restart.sqlite"
    with ServerProcess(stimuli, db, TOKEN, EXTRA) as first:
        with httpx.Client(base_url=first.url) as c:
            s = consent(c, "crash").json()
            for i in range(5):
                assert answer(c, s["session_id"], i, "right").status_code == 200
        first.kill()  # SIGKILL mid-session
        with ServerProcess(stimuli, db, TOKEN, EXTRA) as second, httpx.Client(base_url=second.url) as c:
            resumed = consent(c, "crash", s["session_id"]).json()
            assert resumed["resumed"] and resumed["next_index"] == 5 and resumed["trials"] == s["trials"]
            for i in range(5, TRIALS):
                last = answer(c, s["session_id"], i)
                assert last.status_code == 200
            assert last.json()["completion_code"]
    stored = rows(db, "SELECT trial_index, choice FROM responses ORDER BY trial_index")
    assert stored == [(i, "right" if i < 5 else "left") for i in range(TRIALS)]


@pytest.mark.parametrize("path", [
    "/stimuli/../stimuli.json", "/stimuli/..%2Fstimuli.json", "/stimuli/%2e%2e%2fstimuli.json",
    "/stimuli/%2e%2e/stimuli.json", "/stimuli/..%5Cstimuli.json", "/stimuli//etc/passwd",
    "/stimuli/%2Fetc%2Fpasswd", "/stimuli/stimuli.json", "/static/../server.py", "/static/..%2Fserver.py",
    "/static/%2e%2e%2fdb.py", "/jspsych/..%2F..%2Fpackage.json", "/jspsych/%2Fetc%2Fpasswd",
])
def test_traversal_is_refused(server, path):
    host, port = server.url.removeprefix("http://").split(":")
    con = http.client.HTTPConnection(host, int(port), timeout=10)
    con.request("GET", path)  # http.client sends the path as written (no normalisation)
    reply = con.getresponse()
    body = reply.read()
    assert 400 <= reply.status < 500, (path, reply.status)
    assert b"root:" not in body and b"import" not in body and b"pairs" not in body


def test_absolute_stimulus_path_is_refused(server, stimuli):
    image = next((stimuli / "images").iterdir())
    with httpx.Client(base_url=server.url) as c:
        assert c.get(f"/stimuli/{image.name}").status_code == 200  # the real name is served
        assert c.get(f"/stimuli/{image}").status_code == 404  # its absolute path is not


def test_bad_bodies_are_refused(server):
    with httpx.Client(base_url=server.url) as c:
        sid = consent(c, "bad-bodies").json()["session_id"]
        url = f"/api/session/{sid}/response"
        good = {"trial_index": 0, "choice": "left", "rt_ms": 300.0, "device": "mouse"}
        assert c.post(url, content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
        assert c.post(url, content=json.dumps(good), headers={"Content-Type": "text/plain"}).status_code == 415
        assert c.post(url, json={**good, "pad": "x" * 10_000}).status_code == 413
        assert c.post(url, content=(b"x" * 1000 for _ in range(10)),  # chunked, no Content-Length
                      headers={"Content-Type": "application/json"}).status_code == 413
        for bad in ({**good, "trial_index": "0"}, {**good, "choice": "middle"}, {**good, "rt_ms": -1},
                    {**good, "device": "voice"}, {**good, "extra": 1}, {"trial_index": 0}, [good], 7):
            assert c.post(url, json=bad).status_code == 422, bad
        assert c.post("/api/consent", json={"participant_id": "../x", "consent": True}).status_code == 422
        assert c.post("/api/consent", json={"participant_id": "nope", "consent": False}).status_code == 422
        assert c.post(url, json={**good, "trial_index": TRIALS}).status_code == 404  # unknown trial
        assert c.post("/api/session/nosuch/response", json=good).status_code == 404
        assert c.post(url, json={**good, "trial_index": 1}).status_code == 409  # out of order
        assert c.post(url, json=good).status_code == 200
        assert c.post(url, json={**good, "choice": "right"}).status_code == 409  # a changed answer
    assert rows(server.db, "SELECT trial_index, choice FROM responses WHERE session_id = ?", sid) == [(0, "left")]


def test_admin_export_needs_the_token(server):
    with httpx.Client(base_url=server.url) as c:
        s = consent(c, "exported").json()
        answer(c, s["session_id"], 0, "right", "keyboard")
        assert c.get("/admin/export.csv").status_code == 401
        assert c.get("/admin/export.csv", params={"token": "wrong"}).status_code == 403
        assert c.get("/admin/export.csv", headers={"Authorization": "Bearer wrong"}).status_code == 403
        ok = c.get("/admin/export.csv", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    lines = [line for line in ok.text.splitlines() if ",exported," in f",{line}"]
    assert len(lines) == 1 and ",right," in lines[0] and ",keyboard," in lines[0]
    total = rows(server.db, "SELECT COUNT(*) FROM responses")[0][0]
    assert len(ok.text.splitlines()) == total + 1


def test_pages_name_the_install_command_without_jspsych(stimuli, tmp_path):
    from starlette.testclient import TestClient

    app = create_app(Settings(stimuli=stimuli, db=tmp_path / "s.sqlite", admin_token=TOKEN, n_trials=TRIALS,
                              n_dummies=DUMMIES, node_modules=tmp_path / "node_modules"))
    with TestClient(app) as c:
        page = c.get("/")
        assert page.status_code == 503 and NPM_COMMAND in page.text
        assert c.get("/jspsych/jspsych.js").status_code == 503
        assert c.post("/api/consent", json={"participant_id": "api-only", "consent": True}).status_code == 200


def test_serve_names_bad_inputs(stimuli, tmp_path, capsys):
    from apps.study.__main__ import main

    assert main(["serve", "--stimuli", str(tmp_path / "none"), "--db", str(tmp_path / "a.sqlite")]) == 2
    assert "build-stimuli" in capsys.readouterr().err
    (tmp_path / "junk.sqlite").write_bytes(b"definitely not sqlite" * 50)
    assert main(["serve", "--stimuli", str(stimuli), "--db", str(tmp_path / "junk.sqlite"), *EXTRA]) == 2
    assert "--db" in capsys.readouterr().err
    assert main(["serve", "--stimuli", str(stimuli), "--db", str(tmp_path / "b.sqlite"), "--trials", "500"]) == 2
    assert "lower --trials" in capsys.readouterr().err
