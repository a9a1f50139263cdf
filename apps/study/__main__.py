"""`python -m apps.study {make-dummies, build-stimuli, serve, analyze}` (run from the repository root)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

from apps.study import StudyError
from apps.study.plan import DUMMY_TRIALS, OURS, PAPER_RELATIONS, TRIALS_PER_PARTICIPANT
from emoeditor.fileio import atomic_write_text

ADMIN_TOKEN_ENV = "STUDY_ADMIN_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m apps.study", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dummies = sub.add_parser("make-dummies", help="draw a dummy pool (bright smiling vs dark frowning scenes)")
    dummies.add_argument("--out", required=True, help="folder for images/ and dummies.json")
    dummies.add_argument("--seed", type=int, default=0)

    build = sub.add_parser("build-stimuli", help="pairs (EmoEditor vs a random baseline) from an evaluation run")
    build.add_argument("--eval_out", "--eval-out", required=True, help="the --out folder of scripts/evaluate.py")
    build.add_argument("--dummies", required=True, help="dummy pool: a folder with dummies.json (make-dummies)")
    build.add_argument("--out", required=True, help="the stimulus folder to write (stimuli.json + images/)")
    build.add_argument("--seed", type=int, default=0, help="draws the baseline of each pair")
    build.add_argument("--ours", default=OURS, help="EmoEditor's method label in the run")
    build.add_argument("--baselines", nargs="+", default=None,
                       help="method labels to compare with (default: the paper's five that the run has)")
    build.add_argument("--relations", nargs="+", default=list(PAPER_RELATIONS), choices=["cross", "within"],
                       help="job relations to use (the paper: cross-valence only)")

    serve = sub.add_parser("serve", help="run the experiment server")
    serve.add_argument("--stimuli", required=True, help="the folder build-stimuli wrote")
    serve.add_argument("--db", default="study.sqlite", help="SQLite file (created; back it up, see README)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--trials", type=int, default=TRIALS_PER_PARTICIPANT,
                       help="trials per participant, dummies included (the paper: 100)")
    serve.add_argument("--dummy_trials", "--dummy-trials", type=int, default=DUMMY_TRIALS,
                       help="dummy trials among them, at random positions (the paper: 6)")
    serve.add_argument("--seed", type=int, default=0, help="study seed: with the participant id, fixes each plan")
    serve.add_argument("--admin_token", "--admin-token", default=os.environ.get(ADMIN_TOKEN_ENV),
                       help=f"token for /admin/export.csv (default: ${ADMIN_TOKEN_ENV}, else a random one, printed)")
    serve.add_argument("--completion_code", "--completion-code", default=None,
                       help="one completion code for everyone (e.g. Prolific's); default: a random code per session")

    analyze = sub.add_parser("analyze", help="exclusion, Fig. 5 / S7 / S8 tables and plots from the responses")
    analyze.add_argument("responses", help="the server's SQLite file, its CSV export, or a mapped CSV (README)")
    analyze.add_argument("--out", required=True, help="folder for summary.json, CSVs and PNG plots")
    analyze.add_argument("--max_dummy_errors", "--max-dummy-errors", type=int, default=1,
                         help="exclude participants with more wrong dummy trials than this (the paper: 1 of 6)")
    analyze.add_argument("--se", choices=["se", "se_participants"], default="se",
                         help="error bars: binomial SE over trials, or SE over participants' proportions")
    analyze.add_argument("--ours", default=OURS, help="EmoEditor's label in a `chosen` column")
    analyze.add_argument("--columns", nargs="+", default=[], metavar="CANONICAL=SOURCE",
                         help="map canonical columns (participant_id kind baseline source_emotion target "
                              "chose_ours correct chosen) to the file's column names")
    analyze.add_argument("--values", nargs="+", default=[], metavar="SOURCE=CANONICAL",
                         help="map cell values, e.g. Csty=clipstyler dummy_trial=dummy")
    return parser


def key_values(items: list[str], flag: str) -> dict[str, str]:
    bad = [i for i in items if "=" not in i]
    if bad:
        raise StudyError(f"{flag} {bad[0]!r}: expected NAME=VALUE")
    return dict(i.split("=", 1) for i in items)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "make-dummies":
            from apps.study.dummies import write_dummy_pool

            print(f"dummy pool: {write_dummy_pool(args.out, seed=args.seed)}")
        elif args.command == "build-stimuli":
            from apps.study.stimuli import build_stimuli

            r = build_stimuli(args.eval_out, args.dummies, args.out, seed=args.seed, ours=args.ours,
                              baselines=args.baselines, relations=args.relations)
            print(f"{args.out}: {r.pairs} pairs (ours vs {', '.join(r.baselines)}), {r.dummies} dummies; skipped "
                  f"{r.jobs_without_ours} jobs without EmoEditor's output, {r.jobs_without_baseline} without a "
                  f"baseline's, {len(r.unreadable_images)} unreadable images")
        elif args.command == "analyze":
            from apps.study.analysis import analyse, read_responses

            rows = read_responses(args.responses, key_values(args.columns, "--columns"),
                                  key_values(args.values, "--values"),
                                  ours=args.ours)
            summary = analyse(rows, args.out, max_dummy_errors=args.max_dummy_errors, se=args.se)
            atomic_write_text(Path(args.out) / "summary.json", json.dumps(summary, indent=1, allow_nan=False))
            ex = summary["exclusion"]
            print(f"{ex['participants']} participants, {len(ex['excluded'])} excluded (> {ex['max_dummy_errors']} "
                  f"wrong dummies), {ex['real_trials_kept']} real trials kept")
            for r in summary["preference"]:
                if r["transition"] == "all":
                    se = "n/a" if r[args.se] is None else f"{r[args.se]:.3f}"  # one participant: no spread
                    print(f"  ours vs {r['baseline']:<12} {r['p']:.3f} +- {se} (n={r['n']}, "
                          f"binomial p={r['binom_p']:.3g})")
            print(f"wrote {args.out}/summary.json and " + ", ".join(Path(f).name for f in summary["files"]))
        else:
            import uvicorn

            from apps.study.server import Settings, create_app

            token = args.admin_token or secrets.token_urlsafe(16)
            app = create_app(Settings(stimuli=Path(args.stimuli), db=Path(args.db), admin_token=token,
                                      n_trials=args.trials, n_dummies=args.dummy_trials, seed=args.seed,
                                      completion_code=args.completion_code))
            if not args.admin_token:
                print(f"study: admin token for /admin/export.csv: {token}", file=sys.stderr)
            print(f"study: http://{args.host}:{args.port}/?PROLIFIC_PID=<participant id>", file=sys.stderr)
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
