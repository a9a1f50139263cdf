"""Training checkpoints: atomic, self-describing, and loadable without unpickling.

A checkpoint is a folder ``<save_model_dir>/checkpoints/step_XXXXXXXX/`` holding
``model.safetensors`` (the trainable weights), ``training_state.pt`` (optimizer, LR schedule,
EMA, data position and the args the run was started with; tensors and primitive
containers only, so ``torch.load(weights_only=True)`` reads it) and ``args.json`` (the same
args, human-readable). The folder is written under a temporary name and renamed, and the
``latest`` pointer is replaced atomically, so a run killed mid-save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from emoeditor.errors import EmoEditorError, MissingWeightsError
from emoeditor.fileio import atomic_write_text, plain

CHECKPOINT_DIRNAME = "checkpoints"
LATEST_POINTER = "latest"
STEP_PREFIX = "step_"
MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
ARGS_FILE = "args.json"
REQUIRED_FILES = (MODEL_FILE, STATE_FILE)

logger = logging.getLogger(__name__)


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move the finished folder `tmp` to `final`, replacing an older `final` with no moment where
    neither exists (a crash leaves the old one, or the old one under a ``.old`` name next to it)."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_root(save_model_dir: str | Path) -> Path:
    return Path(save_model_dir) / CHECKPOINT_DIRNAME


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)
             and p.name[len(STEP_PREFIX):].isdigit() and not missing_files(p)]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def missing_files(path: Path) -> list[str]:
    """The files a checkpoint folder needs that are not there (a folder copied or pruned by hand)."""
    return [name for name in REQUIRED_FILES if not (path / name).is_file()]


def save_checkpoint(root: Path, step: int, weights: dict[str, torch.Tensor], state: dict, args: dict,
                    keep_last: Optional[int] = None) -> Path:
    """Write step `step` atomically, point ``latest`` at it, and prune to the last `keep_last`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{step:08d}"
    for stale in root.glob(f".{STEP_PREFIX}*.tmp"):  # left by a run killed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{final.name}.tmp"
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / MODEL_FILE))
    torch.save({**state, "args": plain(args)}, tmp / STATE_FILE)
    (tmp / ARGS_FILE).write_text(json.dumps(plain(args), indent=2, sort_keys=True))
    replace_dir(tmp, final)  # re-saving the same step (e.g. final step == periodic step) replaces it
    atomic_write_text(root / LATEST_POINTER, final.name + "\n")
    if keep_last is not None and keep_last > 0:
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(spec: str, save_model_dir: str | Path) -> Path:
    """``latest`` (under save_model_dir: the newest complete checkpoint) or a path to a checkpoint folder."""
    if spec == LATEST_POINTER:
        root = checkpoint_root(save_model_dir)
        pointer = root / LATEST_POINTER
        path = root / pointer.read_text().strip() if pointer.exists() else None
        if path is None or missing_files(path):
            ckpts = list_checkpoints(root)
            if not ckpts:
                raise MissingWeightsError(
                    f"--resume latest: no complete checkpoint under {root}{_incomplete_note(root)}; train "
                    f"without --resume to start over, or pass --resume PATH to a step_XXXXXXXX folder")
            if path is not None:
                logger.warning("checkpoint %s is incomplete (%s missing); resuming from %s, the newest complete one",
                               path, ", ".join(missing_files(path)), ckpts[-1])
            path = ckpts[-1]
        return path
    path = Path(spec)
    if path.is_dir() and not missing_files(path):
        return path
    if path.is_dir() and list_checkpoints(path / CHECKPOINT_DIRNAME):
        return list_checkpoints(path / CHECKPOINT_DIRNAME)[-1]
    if path.is_dir() and path.name.startswith(STEP_PREFIX) and any((path / n).exists() for n in REQUIRED_FILES):
        raise MissingWeightsError(f"--resume {spec}: {_incomplete(path)}")
    what = "no such folder" if not path.exists() else "not a checkpoint folder"
    raise MissingWeightsError(
        f"--resume {spec}: {what} (a checkpoint is a {STEP_PREFIX}XXXXXXXX folder holding "
        f"{' and '.join(REQUIRED_FILES)}); pass 'latest' or a .../{CHECKPOINT_DIRNAME}/{STEP_PREFIX}XXXXXXXX folder")


def _incomplete(path: Path) -> str:
    """What is missing from an incomplete checkpoint folder and what to resume from instead."""
    complete = list_checkpoints(path.parent)
    instead = (f"resume from the newest complete one, --resume {complete[-1]}" if complete else
               "no complete checkpoint is left beside it, so train without --resume to start over")
    return (f"checkpoint {path} is incomplete: {', '.join(missing_files(path))} missing (copied or deleted "
            f"by hand?); {instead}")


def _incomplete_note(root: Path) -> str:
    bad = [p.name for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir() and missing_files(p)] if root.is_dir() else []
    return f" ({', '.join(sorted(bad))} incomplete: {', '.join(REQUIRED_FILES)} needed)" if bad else ""


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, state); the state is read with weights_only=True (no arbitrary unpickling)."""
    if missing_files(path):
        raise MissingWeightsError(_incomplete(path))
    try:
        weights = load_file(str(path / MODEL_FILE))
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise EmoEditorError(f"checkpoint {path} cannot be read ({exc}); "
                             f"resume from an earlier step_* folder") from exc
    return weights, state
