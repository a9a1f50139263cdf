"""--help of train.py, scripts/train_predictor.py and scripts/cache_latents.py (issue 9, item 17), and their
--quiet/--verbose (emoeditor.logs)."""

import argparse
import logging
import shlex

import pytest
from repo_scripts import REPO, load_script

from emoeditor.config import parse_args


def train_parser():
    from emoeditor.cli.train import build_parser

    return build_parser()


def cache_parser():
    from emoeditor.cli.train import build_cache_parser

    return build_cache_parser()


def predictor_parser():
    from emoeditor.cli.train_predictor import build_parser

    return build_parser()


PARSERS = {"train.py": train_parser, "scripts/cache_latents.py": cache_parser,
           "scripts/train_predictor.py": predictor_parser}
UNGROUPED = {"help", "config", "quiet", "verbose"}  # the top "options" section


def shown_help(parser, action) -> str:
    return parser._get_formatter()._expand_help(action)


def visible(parser):
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_every_default_is_shown_once(script):
    parser = PARSERS[script]()
    parse_args(parser, [])  # as the entry point builds it (adds --config where absent)
    for action in visible(parser):
        text = shown_help(parser, action)
        assert text.lower().count("default") <= 1, (action.dest, text)
        default = action.default
        if action.dest != "help" and default is not None and default is not False:
            value = " ".join(map(str, default)) if isinstance(default, list) else str(default)
            switched_on = default is True and f"--no-{action.dest}" in text  # "on; --no-x turns it off"
            assert f"(default: {value})" in text or "default" in text.lower() or switched_on, (action.dest, text)
        assert text.strip(), f"--{action.dest} has no help"


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_options_are_grouped(script):
    parser = PARSERS[script]()
    parse_args(parser, [])
    groups = {a.dest: g.title for g in parser._action_groups for a in g._group_actions}
    loose = sorted(a.dest for a in visible(parser) if groups.get(a.dest) in ("options", "optional arguments")
                   and a.dest not in UNGROUPED)
    assert loose == [] and len({groups[a.dest] for a in visible(parser)}) >= 3


def example_commands(epilog: str) -> list[list[str]]:
    """The example command lines of an epilog, as argv lists (comments, `make demo &&`, continuations removed)."""
    text = epilog.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("make demo && "):
            line = line[len("make demo && "):]
        if line.startswith(("python ", "accelerate launch ")):
            commands.append(shlex.split(line))
    return commands


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_help_has_working_examples(script, monkeypatch, capsys):
    """Each example in --help names a real script and parses with that script's flags and presets."""
    parser = PARSERS[script]()
    with pytest.raises(SystemExit):
        parse_args(parser, ["--help"])
    help_text = capsys.readouterr().out
    assert "examples:" in help_text
    commands = example_commands(parser.epilog)
    assert any(script in cmd for cmd in commands), commands
    monkeypatch.chdir(REPO)  # the examples run from the repository root
    for cmd in commands:
        name = next(word for word in cmd if word.endswith(".py"))
        assert (REPO / name).is_file(), cmd
        argv = cmd[cmd.index(name) + 1:]
        if name in PARSERS:
            parse_args(PARSERS[name](), argv)
        else:
            parse_args(load_script(name).build_parser(), argv)


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_quiet_and_verbose_set_up_logging(script, tmp_path, monkeypatch):
    """--quiet / --verbose reach emoeditor.logs.setup_logging before any work (here: a missing input)."""
    from emoeditor.errors import EmoEditorError

    main = load_script(script).main
    monkeypatch.chdir(tmp_path)
    missing = ["--data_root", "nowhere"] if "predictor" in script else ["--config", str(REPO / "configs/tiny.yaml"),
                                                                       "--latent_cache", "cache"]
    for flag, level in (("--quiet", logging.WARNING), ("--verbose", logging.DEBUG), (None, logging.INFO)):
        logging.getLogger("emoeditor").setLevel(logging.NOTSET)
        with pytest.raises(EmoEditorError):
            main(missing + ([flag] if flag else []))
        assert logging.getLogger("emoeditor").level == level, flag
    with pytest.raises(SystemExit):  # one or the other
        parse_args(PARSERS[script](), ["--quiet", "--verbose"])
