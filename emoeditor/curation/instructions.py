"""The EPGS instruction bank: per target emotion, source-agnostic Ip2p instructions (json/epgs_instructions.json).

The paper kept the top ten of 50 GPT-3 drafts per emotion (Supp. S1); the bank must cover every
emotion with at least that many distinct instructions so a target never runs out of variety.
"""

from __future__ import annotations

import json
from pathlib import Path

from emoeditor.constants import EMOTIONS
from emoeditor.curation.shards import digest_of
from emoeditor.errors import EmoEditorError
from emoeditor.fileio import missing_path

DEFAULT_BANK = Path(__file__).resolve().parents[2] / "json" / "epgs_instructions.json"  # the repository's
MIN_PER_EMOTION = 10


def bank_problems(bank: object, min_per_emotion: int = MIN_PER_EMOTION) -> list[str]:
    """Everything wrong with a bank mapping emotion -> list of instructions (empty when usable)."""
    if not isinstance(bank, dict):
        return [f"expected an object mapping each emotion to a list of instructions, got {type(bank).__name__}"]
    problems = [f"unknown emotion {name!r} (expected one of {', '.join(EMOTIONS)})" for name in bank
                if name not in EMOTIONS]
    for emotion in EMOTIONS:
        items = bank.get(emotion)
        if not isinstance(items, list):
            problems.append(f"{emotion}: missing, or not a list of instructions")
            continue
        bad = [i for i, text in enumerate(items) if not isinstance(text, str) or not text.strip()]
        if bad:
            problems.append(f"{emotion}: instruction(s) {bad} are not non-empty strings")
        texts = [t.strip().lower() for t in items if isinstance(t, str)]
        if len(set(texts)) != len(texts):
            problems.append(f"{emotion}: duplicate instructions")
        if len(items) < min_per_emotion:
            problems.append(f"{emotion}: {len(items)} instructions, need at least {min_per_emotion}")
    return problems


def load_bank(path: str | Path = DEFAULT_BANK, min_per_emotion: int = MIN_PER_EMOTION) -> dict[str, list[str]]:
    """The bank's instructions in EMOTIONS order; EmoEditorError naming the file and every problem otherwise."""
    path = Path(path)
    if not path.is_file():
        raise EmoEditorError(f"{missing_path(path, 'instruction bank')}; pass --bank json/epgs_instructions.json "
                             f"or a file of the same form")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EmoEditorError(f"instruction bank {path}: not valid JSON ({exc})") from None
    bank = data.get("instructions", data) if isinstance(data, dict) else data
    problems = bank_problems(bank, min_per_emotion)
    if problems:
        raise EmoEditorError(f"instruction bank {path}: " + "; ".join(problems))
    return {emotion: [text.strip() for text in bank[emotion]] for emotion in EMOTIONS}


def bank_digest(bank: dict[str, list[str]]) -> str:
    """What a shard header records: the instructions themselves, not the file's bytes or name."""
    return digest_of(bank)
