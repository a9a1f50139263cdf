#!/usr/bin/env python
"""Draft EPGS instructions per emotion with a local causal language model, for people to rank.

The paper drafted 50 source-agnostic instructions per emotion with GPT-3 and kept the ten that
annotators ranked best (Supp. S1). This writes the drafts (greedy decoding: a rerun gives the same
text) to a JSON file; copy the ones you rank best into json/epgs_instructions.json (>= 10 per emotion;
`curate_emopair.py epgs --bank` checks it).

    python scripts/draft_instructions.py --llm Qwen/Qwen2.5-0.5B-Instruct --out runs/instruction_drafts.json
    python scripts/draft_instructions.py --tiny --per_emotion 3        # random-weight tiny LM, a smoke run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emoeditor.config import parse_args, run_cli
from emoeditor.constants import EMOTIONS
from emoeditor.fileio import atomic_write_text
from emoeditor.logs import add_verbosity_args, setup_logging
from emoeditor.models.language import DEFAULT_LLM, LocalInstructionModel, first_instruction, tiny_instruction_model

PROMPT = ("Write one short instruction for an image-editing model that would make any photo evoke {emotion}, "
          "whatever the photo shows (for example: 'make it a sunny festival with fireworks'). This is idea "
          "{number}; avoid these earlier ideas: {previous}. Answer with the instruction only.")
PREVIOUS_SHOWN = 8  # earlier drafts named in the prompt, so greedy decoding moves on to new ideas


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm", default=DEFAULT_LLM, help="local causal LM folder or hub id (transformers)")
    p.add_argument("--tiny", action="store_true", help="random-weight tiny LM built in code (no download)")
    p.add_argument("--per_emotion", type=int, default=50, help="drafts asked for per emotion")
    p.add_argument("--device", default="cpu", help="device of the language model")
    p.add_argument("--out", default="runs/instruction_drafts.json", help="JSON file the drafts go to")
    add_verbosity_args(p)
    return p


def draft(llm, emotion: str, count: int) -> list[str]:
    """Up to `count` distinct drafts: an empty or repeated answer is dropped."""
    drafts: list[str] = []
    for number in range(1, count + 1):
        previous = "; ".join(drafts[-PREVIOUS_SHOWN:]) or "none"
        text = first_instruction(llm(PROMPT.format(emotion=emotion, number=number, previous=previous)))
        if text and text.lower() not in {d.lower() for d in drafts}:
            drafts.append(text)
    return drafts


def main(argv=None) -> dict:
    args = parse_args(build_parser(), argv)
    setup_logging(args)
    llm = tiny_instruction_model() if args.tiny else LocalInstructionModel.from_pretrained(args.llm, args.device)
    drafts = {emotion: draft(llm, emotion, args.per_emotion) for emotion in EMOTIONS}
    result = {"llm": llm.name, "prompt": PROMPT, "drafts": drafts}
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(f"wrote {sum(map(len, drafts.values()))} drafts to {args.out}; rank them and copy the best ten per "
          f"emotion into json/epgs_instructions.json")
    return result


if __name__ == "__main__":
    run_cli(main)
