"""The registry of editing methods and the method-spec syntax of `scripts/evaluate.py --methods`.

A method on the command line is ``[label=]name[:key=value,...]``:

- ``ours``                           EmoEditor from --model with the paper's critic (Table 1 "Ours")
- ``wo_P``                           EmoEditor, one pass without the critic (Table 1 "w/o P")
- ``wo_P_onehot``                    one pass, one-hot encoder input: P removed everywhere ("w/o P", 2nd reading)
- ``wo_Lemb:model=runs/lambda0``     a model trained with lambda = 0 (Table 1 "w/o L_emb")
- ``official=emoeditor:critic=official``  any label, any kind, any options
- ``identity``                       returns the source unchanged (a floor for EMR/ESR, 0 for ENRD/ESS)

Adding a method (e.g. a baseline) is one new file in this folder (`emoeditor/editors/`) that
decorates a factory with `register_editor` (and names presets with `register_preset`);
`emoeditor.editors.discovery` imports every file here before a spec is parsed. A factory is
``(options: dict, context: MethodContext) -> Editor``. Options are strings from the spec; the
factory converts what it needs. ``paper_row=...`` names the paper's Table 1 row to print beside it.

A method that declares its options (``register_editor(kind, options={name: converter})``) has them
checked when the spec is parsed, before any work: an unknown name (``ours:modle=x``) or a value its
converter rejects is a MethodError naming the option and the valid ones. Options that name files
(``paths=``) are checked to exist, falling back to the harness's default of the same name (--model).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch

from emoeditor.editors.base import Editor
from emoeditor.errors import MethodError
from emoeditor.fileio import missing_path, written_by_demo


@dataclass
class MethodContext:
    """What the harness knows that a factory may use: devices, shared paths and loop settings."""
    device: torch.device = torch.device("cpu")
    model: Optional[str] = None  # default EmoEditor model folder (--model)
    predictor: Optional[str] = None  # emotion predictor (--predictor)
    critic: str = "paper"
    num_loop: Optional[int] = None
    num_inference_steps: Optional[int] = None
    batch_size: int = 8
    return_candidates: bool = True  # so Fig. S11 can be computed from the same run
    extra: dict = field(default_factory=dict)


EditorFactory = Callable[[dict, MethodContext], Editor]
EDITOR_FACTORIES: dict[str, EditorFactory] = {}
# kind -> {option: converter that raises on a bad value}; kinds not here check their own options
EDITOR_OPTIONS: dict[str, dict[str, Callable[[str], object]]] = {}
# kind -> {option naming a file or folder that must exist: what it is}
EDITOR_PATHS: dict[str, dict[str, str]] = {}

# name -> (kind, default options, paper Table 1 row); each method's file registers its own
PRESETS: dict[str, tuple[str, dict, Optional[str]]] = {}
# Presets that are meaningless without an option (e.g. an ablation that is a different model).
REQUIRED_OPTIONS: dict[str, tuple[str, str]] = {}
def register_preset(name: str, kind: str, options: dict, paper_row: Optional[str] = None,
                    required: Optional[tuple[str, str]] = None) -> None:
    """A named configuration of a registered kind (e.g. "wo_P" = emoeditor with critic none).

    `required`: (option, what it is) that a spec must give, e.g. the model of an ablation."""
    PRESETS[name] = (kind, dict(options), paper_row)
    if required is not None:
        REQUIRED_OPTIONS[name] = required


def register_editor(kind: str, paper_row: Optional[str] = None,
                    options: Optional[Mapping[str, Callable[[str], object]] | Sequence[str]] = None,
                    paths: Optional[Mapping[str, str]] = None) -> Callable[[EditorFactory], EditorFactory]:
    """Decorator: make `kind` usable in method specs (and a preset of the same name).

    `options`: the option names the factory takes (a sequence: any string value; a mapping: a converter
    per name that raises on a bad value), checked at parse time; None leaves checking to the factory.
    `paths`: {option: what it is} for options naming files that must exist."""
    def wrap(factory: EditorFactory) -> EditorFactory:
        EDITOR_FACTORIES[kind] = factory
        PRESETS.setdefault(kind, (kind, {}, paper_row))
        if options is not None:
            EDITOR_OPTIONS[kind] = dict(options) if isinstance(options, Mapping) else {k: str for k in options}
        if paths:
            EDITOR_PATHS[kind] = dict(paths)
        return factory
    return wrap


def choice(*values: str) -> Callable[[str], str]:
    """An option converter accepting only `values`."""
    def convert(value: str) -> str:
        if value not in values:
            raise MethodError(f"choose one of {', '.join(values)}")
        return value
    return convert


def check_options(spec: str, kind: str, options: dict) -> None:
    """A declared kind's option names and values (see `register_editor`); MethodError on the first bad one."""
    accepted = EDITOR_OPTIONS.get(kind)
    if accepted is None:
        return
    for key, value in options.items():
        if key not in accepted:
            close = difflib.get_close_matches(key, list(accepted), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            takes = f"takes: {', '.join(sorted(accepted))}" if accepted else "takes no options"
            raise MethodError(f"method {spec!r}: unknown option {key!r}{hint}; {kind} {takes}")
        try:
            accepted[key](value)
        except (MethodError, ValueError, TypeError) as exc:
            raise MethodError(f"method {spec!r}: option {key}={value!r} is not valid ({exc})") from None


@dataclass(frozen=True)
class MethodSpec:
    label: str  # row name and output folder name
    kind: str
    options: tuple[tuple[str, str], ...] = ()
    paper_row: Optional[str] = None

    @property
    def opts(self) -> dict:
        return dict(self.options)

    def check(self, context: MethodContext) -> None:
        """The files this method's options (or the harness's defaults) name exist: checked before any work."""
        for name, what in EDITOR_PATHS.get(self.kind, {}).items():
            value = self.opts.get(name) or getattr(context, name, None)
            if value is None:
                raise MethodError(f"method {self.label!r} needs {what}: pass --{name} PATH or "
                                  f"{self.label}:{name}=PATH")
            if not Path(value).exists():
                demo = (" It is one of the files `make demo` writes: run `make demo` first."
                        if written_by_demo(value) else "")
                raise MethodError(f"{missing_path(value, f'{name} of method {self.label!r}')}; pass {what} with "
                                  f"--{name} or {self.label}:{name}=PATH.{demo}")

    def build(self, context: MethodContext) -> Editor:
        if self.kind not in EDITOR_FACTORIES:
            raise MethodError(f"method {self.label!r}: no editor registered as {self.kind!r}; "
                              f"registered: {', '.join(sorted(EDITOR_FACTORIES))}")
        check_options(self.label, self.kind, self.opts)
        editor = EDITOR_FACTORIES[self.kind](self.opts, context)
        editor.name = self.label
        return editor


_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")


def parse_method(spec: str) -> MethodSpec:
    label, sep, rest = spec.partition("=")
    if not sep or ":" in label:  # no "label=" prefix (an '=' inside the options does not count)
        label, rest = "", spec
    name, _, opt_text = rest.partition(":")
    name = name.strip()
    if name not in PRESETS and name not in EDITOR_FACTORIES:
        raise MethodError(f"method {spec!r}: unknown method {name!r}; choose one of "
                          f"{', '.join(sorted(set(PRESETS) | set(EDITOR_FACTORIES)))} "
                          f"(syntax: [label=]name[:key=value,...])")
    kind, options, paper_row = PRESETS.get(name, (name, {}, None))
    options = dict(options)
    for item in filter(None, (s.strip() for s in opt_text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise MethodError(f"method {spec!r}: option {item!r} must be key=value")
        options[key.strip()] = value.strip()
    if name in REQUIRED_OPTIONS and REQUIRED_OPTIONS[name][0] not in options:
        key, what = REQUIRED_OPTIONS[name]
        raise MethodError(f"method {spec!r} needs :{key}=<...> ({what}), e.g. {name}:{key}=runs/lambda0/model")
    paper_row = options.pop("paper_row", paper_row) or None
    check_options(spec, kind, options)
    label = label.strip() or name
    if not _LABEL.match(label):
        raise MethodError(f"method label {label!r} must be letters, digits, '_', '.', '+' or '-' (it names a folder)")
    return MethodSpec(label, kind, tuple(sorted(options.items())), paper_row)


# `--methods all`: Table 1's rows in the paper's order (CT, NST, Csty, Ip2p, LMS, w/o P, w/o L_emb, Ours).
TABLE1_METHODS = ("ct", "nst", "clipstyler", "ip2p", "lms", "wo_P", "wo_Lemb", "ours")
BASELINES = TABLE1_METHODS[:5]
REFERENCE_METHODS = ("ct", "nst")  # the methods that draw a style reference image from a pool


def expand_all(specs: Sequence[str], wo_lemb_model: Optional[str] = None, reference_pool: Optional[str] = None,
               baseline_weights: str = "pretrained") -> list[str]:
    """`all` in a method list becomes Table 1's eight rows; every row, named or from `all`, gets what the
    harness knows for it unless its spec sets it: the reference pool (CT, NST), the w/o L_emb model, and
    weights=tiny for every baseline (also ip2p+critic, lms+critic) on the tiny default."""
    out = []
    for spec in specs:
        if spec.strip() != "all":
            out.append(_with_defaults(spec, wo_lemb_model, reference_pool, baseline_weights))
            continue
        if not wo_lemb_model:
            raise MethodError("--methods all includes Table 1's 'w/o L_emb' row, a model trained with "
                              "`train.py --lambda_emb 0`: pass --wo_lemb_model <its exported folder>")
        out += [_with_defaults(name, wo_lemb_model, reference_pool, baseline_weights) for name in TABLE1_METHODS]
    return out


def _with_defaults(spec: str, wo_lemb_model: Optional[str], reference_pool: Optional[str],
                   baseline_weights: str) -> str:
    label, sep, rest = spec.partition("=")
    if not sep or ":" in label:  # as parse_method: no "label=" prefix
        rest = spec
    name, _, opt_text = rest.partition(":")
    name = name.strip()
    given = {item.partition("=")[0].strip() for item in opt_text.split(",") if item.strip()}
    defaults = {}
    if baseline_weights == "tiny" and (name in BASELINES or name in ("ip2p+critic", "lms+critic")):
        defaults["weights"] = "tiny"
    if name in REFERENCE_METHODS and reference_pool:
        defaults["pool"] = reference_pool
    if name == "wo_Lemb" and wo_lemb_model:
        defaults["model"] = wo_lemb_model
    extra = [f"{k}={v}" for k, v in defaults.items() if k not in given]
    if not extra:
        return spec
    return spec + ("," if opt_text.strip() else ":") + ",".join(extra)


def parse_methods(specs: Sequence[str]) -> list[MethodSpec]:
    methods = [parse_method(s) for s in specs]
    labels = [m.label for m in methods]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise MethodError(f"method labels must be unique; repeated: {', '.join(dup)} (use label=name:...)")
    return methods


def parse_bool(value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise MethodError(f"expected a boolean (true/false), got {value!r}")


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def positive_int(value: str) -> int:
    """Option converter: an integer >= 1 (steps, iterations, batch sizes)."""
    if int(value) < 1:
        raise ValueError("must be at least 1")
    return int(value)


def positive_float(value: str) -> float:
    if not float(value) > 0:
        raise ValueError("must be a number > 0")
    return float(value)


def non_negative(value: str) -> float:
    """Option converter: a number >= 0 (loss weights, learning rates)."""
    if not float(value) >= 0:
        raise ValueError("must be a number >= 0")
    return float(value)


def multiple_of_8(value: str) -> int:
    """Option converter: a working size in pixels that a VAE or U-Net can halve three times."""
    if int(value) < 8 or int(value) % 8:
        raise ValueError("must be a positive multiple of 8")
    return int(value)


def parse_typed(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value
