"""emoeditor.logs: one setup for our messages, the libraries' loggers and every progress bar (issue 9, item 5)."""

import logging
import subprocess
import sys
import warnings

import pytest

from emoeditor import logs
from emoeditor.config import run_cli

BNB_NOTICE = ("Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'. Please make "
              "sure you already `pip install kernels` and the kernels >= 0.11.1")


@pytest.fixture(autouse=True)
def restore_logging():
    """setup_logging changes process-wide state; give the next test the state it had."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    ours = {name: logging.getLogger(name).level for name in logs.OURS}
    filters, state = warnings.filters[:], dict(logs._state)
    yield
    root.handlers[:], root.level = handlers, level
    for name, value in ours.items():
        logging.getLogger(name).setLevel(value)
    warnings.filters[:] = filters
    logs._state.update(state)


def emit(capsys) -> str:
    """One message of every kind from us and from a library; what reached stderr."""
    ours, lib = logging.getLogger("emoeditor.some_module"), logging.getLogger("somelib.module")
    ours.debug("our debug")
    ours.info("our info")
    ours.warning("our warning")
    lib.info("their info")
    lib.warning("their warning")
    lib.error("their error")
    return capsys.readouterr().err


def test_levels(capsys):
    logs.setup_logging("normal")
    err = emit(capsys)
    assert "our info\n" in err and "warning: our warning" in err and "error (somelib.module): their error" in err
    assert "our debug" not in err and "their info" not in err and "their warning" not in err
    assert logs.show_progress()

    logs.setup_logging("quiet")
    err = emit(capsys)
    assert "our info" not in err and "warning: our warning" in err and "their error" in err
    assert not logs.show_progress()

    logs.setup_logging("verbose")
    err = emit(capsys)
    assert "debug: our debug" in err and "info (somelib.module): their info" in err and "their warning" in err
    assert logs.show_progress()


def test_flags_and_namespace():
    import argparse

    parser = logs.add_verbosity_args(argparse.ArgumentParser())
    assert logs.setup_logging(parser.parse_args(["--quiet"])) == "quiet"
    assert logs.setup_logging(parser.parse_args([])) == "normal"
    assert logs.verbosity_flags(parser.parse_args(["--verbose"])) == ["--verbose"]
    assert logs.verbosity_flags("normal") == []
    with pytest.raises(SystemExit):
        parser.parse_args(["--quiet", "--verbose"])
    with pytest.raises(ValueError, match="unknown verbosity"):
        logs.setup_logging("loud")


def test_one_handler_that_follows_stderr_and_leaves_others_alone(capsys):
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    for _ in range(3):
        logs.setup_logging("normal")
    assert [h.get_name() for h in root.handlers].count("emoeditor") == 1 and foreign in root.handlers
    logging.getLogger("emoeditor").info("first")
    assert capsys.readouterr().err == "first\n"
    logging.getLogger("emoeditor").info("second")  # capsys swaps sys.stderr per read; the handler follows
    assert capsys.readouterr().err == "second\n"


@pytest.mark.parametrize("level, verbosity, bars, hub_bars", [
    ("quiet", logging.ERROR, False, False),
    ("normal", logging.ERROR, False, True),
    ("verbose", logging.INFO, True, True),
])
def test_the_libraries_loggers_and_bars(level, verbosity, bars, hub_bars):
    from diffusers.utils import logging as dlog
    from huggingface_hub import utils as hub
    from transformers.utils import logging as tlog

    logs.setup_logging(level)
    assert dlog.get_verbosity() == tlog.get_verbosity() == verbosity
    assert logging.getLogger("huggingface_hub").getEffectiveLevel() == verbosity
    assert dlog.is_progress_bar_enabled() == tlog.is_progress_bar_enabled() == bars
    assert hub.are_progress_bars_disabled() == (not hub_bars)
    logs.setup_logging("normal")


def test_libraries_imported_later_are_configured_when_imported():
    """setup_logging imports none of them (a script that loads no model stays fast), yet configures them."""
    code = """
import sys
from emoeditor import logs
logs.setup_logging("quiet")
heavy = [m for m in ("diffusers", "transformers", "huggingface_hub") if m in sys.modules]
assert not heavy, heavy
import transformers
from diffusers.utils import logging as dlog
from huggingface_hub import utils as hub
from transformers.utils import logging as tlog
import importlib.resources
assert importlib.resources.files("transformers").is_dir()  # the wrapped loader still serves resources
assert dlog.get_verbosity() == tlog.get_verbosity() == 40, (dlog.get_verbosity(), tlog.get_verbosity())
assert not dlog.is_progress_bar_enabled() and not tlog.is_progress_bar_enabled() and hub.are_progress_bars_disabled()
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_the_bitsandbytes_kernels_notice_is_dropped_and_nothing_else(capsys):
    """bitsandbytes logs it while diffusers imports it, before any setup; only that message is dropped."""
    logs.setup_logging("verbose")
    source = logging.getLogger("bitsandbytes.backends.cpu.ops")
    source.warning(BNB_NOTICE)
    source.warning("another bitsandbytes warning")
    err = capsys.readouterr().err
    assert "gemm_4bit" not in err and "another bitsandbytes warning" in err


def test_importing_the_model_code_prints_nothing():
    """What every entry point imports first (emoeditor.config), then the model code (diffusers probes the
    optional bitsandbytes on import): stderr stays empty."""
    code = "import emoeditor.config, emoeditor.editing.loading, emoeditor.editors.emoeditor"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-3000:]


def test_run_cli_sets_up_logging_before_the_entry_point_parses(capsys):
    logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers if h.get_name() != "emoeditor"]
    logging.getLogger("emoeditor").setLevel(logging.NOTSET)
    run_cli(lambda: logging.getLogger("emoeditor.entry").info("starting"))
    assert capsys.readouterr().err == "starting\n"
