"""The inference and evaluation presets run exactly as their headers document, after `make demo`
(issue 9, item 3; the training presets are tested in test_train_cli_presets.py).

A scratch folder stands in for a fresh clone: it links the repository's configs/, demo_img/ and mini_world/,
the demo writes runs/demo/ there, and each documented command runs from it unchanged."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from repo_scripts import REPO

from emoeditor.editors.registry import TABLE1_METHODS


def documented_commands(preset: str) -> list[list[str]]:
    """The `python ...` lines of a preset's header comment (continuation lines joined)."""
    header = []
    for line in (REPO / "configs" / preset).read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    text = re.sub(r"\\\s*\n\s*", " ", "\n".join(header))
    return [shlex.split(line.split("  #")[0])[1:] for line in text.splitlines() if line.startswith("python ")]


def run(args: list[str], cwd) -> subprocess.CompletedProcess:
    script, rest = args[0], args[1:]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / script), *rest], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    work = tmp_path_factory.mktemp("clone")
    for name in ("configs", "demo_img", "mini_world"):
        (work / name).symlink_to(REPO / name)
    proc = run(["scripts/demo.py", "--out", "runs/demo", "--train_steps", "2", "--num_pairs", "8"], work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work


def test_infer_tiny_runs_as_documented(clone):
    (command,) = documented_commands("infer_tiny.yaml")
    proc = run(command, clone)
    assert proc.returncode == 0, proc.stderr[-4000:]
    edits = list((clone / "runs/demo/test_tiny").glob("*_awe_chelsea.*"))
    assert len(edits) == 1 and (clone / "runs/demo/test_tiny/summary.csv").is_file()


@pytest.mark.once  # two minutes; test_table1_methods.py runs every row at the minimum versions too
def test_eval_tiny_runs_as_documented(clone):
    commands = documented_commands("eval_tiny.yaml")
    assert [c[0] for c in commands] == ["scripts/make_toy_emoset.py", "scripts/make_test_split.py",
                                        "scripts/evaluate.py", "train.py", "scripts/evaluate.py"]
    for command in commands:
        proc = run(command, clone)
        assert proc.returncode == 0, (command, proc.stderr[-4000:])
    report = json.loads((clone / "runs/demo/eval/report.json").read_text())
    assert report["num_jobs"] == 112 and set(report["methods"]) == {"ours", "wo_P", "identity"}
    assert all(m["failed"] == 0 for m in report["methods"].values())
    # the whole of Table 1: the five baselines on tiny weights, w/o P, w/o L_emb, Ours
    report = json.loads((clone / "runs/demo/eval_all/report.json").read_text())
    assert report["num_jobs"] == 56 and list(report["methods"]) == list(TABLE1_METHODS)
    assert all(m["failed"] == 0 and m["generated"] == 56 for m in report["methods"].values()), report["methods"]


def test_presets_without_make_demo_say_to_run_it(tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    for preset in ("infer_tiny.yaml", "eval_tiny.yaml"):
        proc = run(documented_commands(preset)[-1], tmp_path)
        assert proc.returncode == 2 and "make demo" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
