"""Helpers for the study's tests and local trials: a fake evaluation run, a server in a subprocess.

The fake run has the layout `scripts/evaluate.py` writes (``<out>/<method>/images/<job_id>.png`` and
``results.csv``) with flat-colour images, each method a different colour, so a test can tell
from the pixels which method an image came from.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from apps.study.dummies import write_dummy_pool
from apps.study.stimuli import build_stimuli
from emoeditor.constants import EMOTIONS
from emoeditor.evaluation.reporting import write_csv
from emoeditor.evaluation.runner import MethodStore
from emoeditor.evaluation.split import build_jobs

REPO = Path(__file__).resolve().parents[2]
METHOD_COLOURS = {"ours": (200, 30, 30), "ct": (30, 200, 30), "nst": (30, 30, 200), "clipstyler": (200, 200, 30),
                  "ip2p": (30, 200, 200), "lms": (200, 30, 200), "wo_P": (90, 90, 90)}


def write_fake_run(out: str | Path, methods: Sequence[str] = tuple(METHOD_COLOURS), per_class: int = 1,
                   size: int = 48) -> Path:
    """An evaluation run of `per_class` sources per emotion, every job edited by every method (flat colours)."""
    out = Path(out)
    sources = [{"id": f"{e}_{i:05d}", "path": f"{e}/{e}_{i:05d}.png", "emotion": e}
               for e in EMOTIONS for i in range(1, per_class + 1)]
    jobs = build_jobs(sources)
    rows = []
    for method in methods:
        store = MethodStore(out, method)
        store.images.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            Image.new("RGB", (size, size), METHOD_COLOURS[method]).save(store.image(job.job_id))
            rows.append({"method": method, "job_id": job.job_id, "source_id": job.source_id,
                         "source_emotion": job.source_emotion, "target_name": job.target_name,
                         "relation": job.relation})
    write_csv(rows, out / "results.csv")
    return out


def make_stimuli(root: str | Path, per_class: int = 1) -> Path:
    """A fake run, the drawn dummy pool and the stimulus folder built from them, under `root`."""
    root = Path(root)
    write_fake_run(root / "run", per_class=per_class)
    write_dummy_pool(root / "dummies")
    build_stimuli(root / "run", root / "dummies", root / "stimuli")
    return root / "stimuli"


def method_of(path: str | Path) -> str:
    """Which method of a fake run drew this image (by its colour)."""
    colour = tuple(int(c) for c in np.asarray(Image.open(path).convert("RGB"))[0, 0])
    return next(m for m, c in METHOD_COLOURS.items() if c == colour)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m apps.study serve` on 127.0.0.1 in a subprocess, up when the constructor returns."""

    def __init__(self, stimuli: Path, db: Path, admin_token: str, extra: Sequence[str] = (),
                 env: Optional[dict] = None, port: Optional[int] = None, timeout: float = 60.0):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(db).with_suffix(f".{self.port}.log")
        cmd = [sys.executable, "-m", "apps.study", "serve", "--stimuli", str(stimuli), "--db", str(db),
               "--port", str(self.port), "--admin_token", admin_token, *extra]
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"study server exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"study server not up after {timeout} s: {self.log.read_text()}") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: what a crash does (no shutdown handler runs)."""
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
