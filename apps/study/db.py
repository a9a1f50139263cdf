"""The study's SQLite store: sessions, their fixed trial plans, and responses keyed by (session, trial).

WAL mode and one short connection per operation (plus one idle connection held for the store's
lifetime): several server threads or processes can write at once (each write is one `BEGIN IMMEDIATE`
transaction; SQLite queues the others), and a crash loses at most the request in flight, never a
stored answer. Every rule about what may be stored
(one participation per id, answers in order, no second answer to a trial) is checked inside the
transaction that writes, so two racing requests cannot both pass it.
"""

from __future__ import annotations

import secrets
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

from apps.study import StudyError

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    participant_id TEXT NOT NULL UNIQUE,
    seed INTEGER NOT NULL,
    n_trials INTEGER NOT NULL,
    stimuli_sha256 TEXT NOT NULL,
    user_agent TEXT,
    created_at TEXT NOT NULL,
    completed_at TEXT,
    completion_code TEXT
);
CREATE TABLE IF NOT EXISTS plan (
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    trial_index INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('real', 'dummy')),
    stimulus_id TEXT NOT NULL,
    target TEXT NOT NULL,
    source_emotion TEXT,
    baseline TEXT,
    left_file TEXT NOT NULL,
    right_file TEXT NOT NULL,
    left_method TEXT,
    right_method TEXT,
    ours_side TEXT,
    correct_side TEXT,
    PRIMARY KEY (session_id, trial_index)
);
CREATE TABLE IF NOT EXISTS responses (
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    trial_index INTEGER NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right')),
    rt_ms REAL NOT NULL,
    device TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (session_id, trial_index)
);
"""

PLAN_COLUMNS = ("trial_index", "kind", "stimulus_id", "target", "source_emotion", "baseline", "left_file",
                "right_file", "left_method", "right_method", "ours_side", "correct_side")
# the admin export and the analysis read the same rows (one per answered trial)
EXPORT_SQL = """
SELECT s.participant_id, s.session_id, p.trial_index, p.kind, p.stimulus_id, p.source_emotion, p.target,
       p.baseline, p.left_method, p.right_method, p.ours_side, p.correct_side, r.choice,
       CASE WHEN p.kind = 'real' THEN (r.choice = p.ours_side) END AS chose_ours,
       CASE WHEN p.kind = 'dummy' THEN (r.choice = p.correct_side) END AS correct,
       r.rt_ms, r.device, r.received_at, s.completed_at
FROM responses r JOIN plan p USING (session_id, trial_index) JOIN sessions s USING (session_id)
ORDER BY s.created_at, s.session_id, p.trial_index
"""


class Refused(Exception):
    """A request the study's rules refuse (a second participation, an out-of-order or changed answer)."""


class NotFound(Exception):
    """An unknown session or trial."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StudyDB:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # held open for the store's lifetime: SQLite checkpoints and truncates the WAL (an fsync) whenever
        # its last connection closes, which would otherwise happen after nearly every request
        self._anchor = sqlite3.connect(self.path, check_same_thread=False)
        try:
            self._anchor.execute("PRAGMA journal_mode=WAL")
            self._anchor.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StudyError(f"--db {self.path}: {exc}; pass a new file name or the study's own database") from exc

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout=30000")
        con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that holds the write lock from its first statement."""
        with self.connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def consent(self, participant_id: str, session_id: Optional[str], make_plan: Callable[[], list[dict]],
                seed: int, stimuli_sha256: str, user_agent: str = "") -> tuple[str, bool]:
        """(session id, resumed?). A new id gets a session and its plan; the holder of an unfinished
        session's id resumes it; anyone else with a known id, or a finished one, is refused."""
        with self.write() as con:
            row = con.execute("SELECT session_id, completed_at FROM sessions WHERE participant_id = ?",
                              (participant_id,)).fetchone()
            if row is not None:
                if row["completed_at"]:
                    raise Refused("this participant id has already completed the study; each person takes part once")
                if session_id is None or not secrets.compare_digest(session_id, row["session_id"]):
                    raise Refused("this participant id has already started the study in another browser; "
                                  "each person takes part once (contact the researcher if this is a mistake)")
                return row["session_id"], True
            plan = make_plan()
            new_id = secrets.token_urlsafe(18)
            con.execute("INSERT INTO sessions (session_id, participant_id, seed, n_trials, stimuli_sha256, "
                        "user_agent, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (new_id, participant_id, seed, len(plan), stimuli_sha256, user_agent[:300], now()))
            con.executemany(f"INSERT INTO plan (session_id, {', '.join(PLAN_COLUMNS)}) "
                            f"VALUES (?, {', '.join('?' * len(PLAN_COLUMNS))})",
                            [(new_id, *(t[c] for c in PLAN_COLUMNS)) for t in plan])
            return new_id, False

    def session(self, session_id: str) -> dict:
        """The session, its plan and how many trials are answered (the next one to show)."""
        with self.connect() as con:
            s = con.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
            if s is None:
                raise NotFound("unknown session")
            plan = [dict(r) for r in con.execute("SELECT * FROM plan WHERE session_id = ? ORDER BY trial_index",
                                                 (session_id,))]
            answered = con.execute("SELECT COUNT(*) FROM responses WHERE session_id = ?", (session_id,)).fetchone()[0]
        return {**dict(s), "plan": plan, "next_index": answered}

    def respond(self, session_id: str, trial_index: int, choice: str, rt_ms: float, device: str,
                completion_code: Callable[[], str]) -> dict:
        """Store the answer to the next trial; an identical retry is a no-op, anything else out of turn is refused."""
        with self.write() as con:
            s = con.execute("SELECT n_trials, completion_code FROM sessions WHERE session_id = ?",
                            (session_id,)).fetchone()
            if s is None:
                raise NotFound("unknown session")
            if not 0 <= trial_index < s["n_trials"]:
                raise NotFound(f"unknown trial {trial_index}: this session has trials 0..{s['n_trials'] - 1}")
            old = con.execute("SELECT choice FROM responses WHERE session_id = ? AND trial_index = ?",
                              (session_id, trial_index)).fetchone()
            answered = con.execute("SELECT COUNT(*) FROM responses WHERE session_id = ?", (session_id,)).fetchone()[0]
            if old is not None:
                if old["choice"] != choice:
                    raise Refused(f"trial {trial_index} was already answered '{old['choice']}'; answers are final")
                return {"stored": False, "next_index": answered, "completion_code": s["completion_code"]}
            if trial_index != answered:
                raise Refused(f"out of order: trial {trial_index} sent, trial {answered} is the next to answer")
            con.execute("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                        (session_id, trial_index, choice, rt_ms, device, now()))
            code = s["completion_code"]
            if answered + 1 == s["n_trials"]:
                code = completion_code()
                con.execute("UPDATE sessions SET completed_at = ?, completion_code = ? WHERE session_id = ?",
                            (now(), code, session_id))
            return {"stored": True, "next_index": answered + 1, "completion_code": code}

    def export_rows(self) -> tuple[list[str], list[tuple]]:
        """(columns, rows) of every answered trial, joined with its plan and session."""
        with self.connect() as con:
            cur = con.execute(EXPORT_SQL)
            return [c[0] for c in cur.description], [tuple(r) for r in cur]
