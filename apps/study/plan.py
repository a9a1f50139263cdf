"""One participant's trial plan: which pairs, in which order, which image on the left, where the dummies go.

Drawn once, at consent, from a generator seeded by (study seed, participant id), and stored in
SQLite with the session, so a reload or a server restart shows exactly the same trials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apps.study import StudyError
from emoeditor.seeding import mix_seed

MANIFEST = "stimuli.json"  # what apps/study/stimuli.py writes in a stimulus folder, beside images/
MANIFEST_FORMAT = 1
OURS = "ours"  # EmoEditor's method label in an evaluation run
PAPER_RELATIONS = ("cross",)  # the paper's study uses cross-valence jobs only
TRIALS_PER_PARTICIPANT = 100  # Sec. 4: 100 trials each, the 6 dummies among them
DUMMY_TRIALS = 6  # Supp. S2.4


@dataclass(frozen=True)
class Stimuli:
    """A stimulus folder (apps/study/stimuli.py): the manifest and the files it may serve."""

    root: Path
    manifest: dict
    files: frozenset  # the only names /stimuli/ serves

    @property
    def images(self) -> Path:
        return self.root / "images"


def load_stimuli(root: str | Path) -> Stimuli:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise StudyError(f"{path} not found: build the stimulus folder with "
                         f"`python -m apps.study build-stimuli --eval_out RUN --dummies POOL --out {root}`")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path} is not valid JSON ({exc}); rebuild the folder with build-stimuli") from exc
    if manifest.get("format") != MANIFEST_FORMAT:
        raise StudyError(f"{path}: format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}; rebuild it")
    files = {p[k] for p in manifest["pairs"] for k in ("ours_file", "baseline_file")}
    files |= {d[k] for d in manifest["dummies"] for k in ("correct_file", "wrong_file")}
    missing = sorted(f for f in files if not (root / "images" / f).is_file())
    if missing:
        raise StudyError(f"{root}/images lacks {len(missing)} files of the manifest (e.g. {missing[0]}); rebuild it")
    return Stimuli(root, manifest, frozenset(files))


def check_design(manifest: dict, n_trials: int, n_dummies: int) -> None:
    """Every participant must get distinct pairs and distinct dummies."""
    n_real = n_trials - n_dummies
    if n_dummies < 0 or n_real < 1:
        raise StudyError(f"--trials {n_trials} with --dummy_trials {n_dummies}: need at least one real trial")
    if n_real > len(manifest["pairs"]):
        raise StudyError(f"--trials {n_trials} needs {n_real} real pairs but the stimuli have "
                         f"{len(manifest['pairs'])}; lower --trials or build stimuli from a larger run")
    if n_dummies > len(manifest["dummies"]):
        raise StudyError(f"--dummy_trials {n_dummies} but the dummy pool has {len(manifest['dummies'])} entries")


def make_plan(manifest: dict, participant_id: str, n_trials: int, n_dummies: int, seed: int) -> list[dict]:
    """The trials in presentation order, each with its left/right files and what the answer means."""
    check_design(manifest, n_trials, n_dummies)
    rng = np.random.default_rng(mix_seed(seed, "study-plan", participant_id))
    pairs = [manifest["pairs"][i] for i in rng.choice(len(manifest["pairs"]), n_trials - n_dummies, replace=False)]
    dummies = [manifest["dummies"][i] for i in rng.choice(len(manifest["dummies"]), n_dummies, replace=False)]
    dummy_at = set(rng.choice(n_trials, n_dummies, replace=False).tolist())
    flips = rng.random(n_trials) < 0.5  # True: the EmoEditor (or correct dummy) image on the right
    plan, real, dummy = [], iter(pairs), iter(dummies)
    for index in range(n_trials):
        side, other = ("right", "left") if flips[index] else ("left", "right")
        if index in dummy_at:
            d = next(dummy)
            files = {side: d["correct_file"], other: d["wrong_file"]}
            entry = {"kind": "dummy", "stimulus_id": d["id"], "target": d["target"], "source_emotion": None,
                     "baseline": None, "ours_side": None, "correct_side": side,
                     "left_method": None, "right_method": None}
        else:
            p = next(real)
            files = {side: p["ours_file"], other: p["baseline_file"]}
            entry = {"kind": "real", "stimulus_id": p["id"], "target": p["target"],
                     "source_emotion": p["source_emotion"], "baseline": p["baseline"], "ours_side": side,
                     "correct_side": None, f"{side}_method": manifest["ours"], f"{other}_method": p["baseline"]}
        plan.append({"trial_index": index, **entry, "left_file": files["left"], "right_file": files["right"]})
    return plan
