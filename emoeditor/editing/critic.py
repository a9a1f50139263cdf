"""The critic of iterative emotion inference (paper Sec. 3.3): when to stop editing, what to return.

Three policies, one flag (``--critic``):

- ``paper`` (default): accept a candidate when ``ssim_low < SSIM < ssim_high`` and P's top class is
  the target with confidence > ``confidence``; otherwise the candidate becomes the next input (the
  source stays the condition). After ``num_loop`` candidates without an accept, return the one
  with the highest target confidence.
- ``official``: the decision logic of the official ``test.py`` (an edit is *kept* when
  0.5 < SSIM < 0.8 or the top class is the target; a dropped edit is replaced by the last kept
  image as the next input; stop once a kept edit reaches target confidence 0.6; at the end fall
  back to the best-target, then best same-valence, then best-target kept edit). Unlike the
  official script, the total number of edits is bounded by ``num_loop`` too, so consecutive
  rejections cannot loop forever.
- ``none``: one edit, returned as is (the paper's "w/o P" ablation).

The encoder's "direction" input is target - P(source) on every iteration of the paper policy:
the paper keeps the source as the condition and names no update, so the direction stays
relative to it (``direction_probs="input"`` uses P(current input) instead). The official policy
uses P(source) for the first edit and P(first edit) for every later one, as its script does.

The accept/keep rules are pure functions of (SSIM, P's probabilities, target) so they can be
unit-tested; one `Critic` subclass per policy holds the per-job state the batched loop steps, and its
`result()` is what callers read (never re-derived from the trace).

Mixture targets. For a target vector ``w`` (non-negative, sums to 1) and P's probabilities ``p``,
"the top class is the target" means ``argmax p`` lies in the support ``{i : w_i > 0}``, and the
*target confidence* is, by default, P's mass on that support, ``sum_{i: w_i > 0} p_i``
(``confidence_mode="support"``). For a one-hot target both are the usual "argmax == target" and
``p_target``. The weighted mass ``sum_i w_i p_i`` (``confidence_mode="weighted"``) is available,
but note it is capped by ``max_i w_i``: a 50/50 mixture could never pass a 0.8 threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from emoeditor.constants import EMOTIONS, NEGATIVE, NUM_LOOP, OFFICIAL_CRITIC, PAPER_CRITIC, POSITIVE
from emoeditor.valence_arousal import mixture_to_va

CONFIDENCE_MODES = ("support", "weighted")
DIRECTION_SOURCES = ("source", "input")  # P(source) fixed (default) or P(current input)
SOURCE_INDEX = -1  # "the returned image is the source" (official, when no edit was ever kept)


# ----------------------------------------------------------------------------------------------
# Pure rules
# ----------------------------------------------------------------------------------------------

def target_support(target: torch.Tensor) -> list[int]:
    return [i for i, w in enumerate(torch.as_tensor(target).float().tolist()) if w > 0]


def target_confidence(probs: torch.Tensor, target: torch.Tensor, mode: str = "support") -> float:
    """P's confidence in the target (see module docstring for mixtures)."""
    probs = torch.as_tensor(probs).double().cpu()  # float64: thresholds compare like Python floats
    target = torch.as_tensor(target).double().cpu()
    if mode == "support":
        return float(probs[target > 0].sum())
    if mode == "weighted":
        return float((probs * target).sum())
    raise ValueError(f"unknown confidence mode {mode!r}; choose one of {CONFIDENCE_MODES}")


def top_is_target(probs: torch.Tensor, target: torch.Tensor) -> bool:
    return int(torch.as_tensor(probs).float().argmax()) in target_support(target)


def ssim_in_range(ssim: float, low: float, high: float) -> bool:
    return low < ssim < high


def paper_accept(ssim: float, probs: torch.Tensor, target: torch.Tensor, ssim_low: float = PAPER_CRITIC["ssim_low"],
                 ssim_high: float = PAPER_CRITIC["ssim_high"], confidence: float = PAPER_CRITIC["confidence"],
                 confidence_mode: str = "support") -> bool:
    """Paper: structure kept (SSIM in range) AND P's top class is the target with confidence > threshold."""
    return (ssim_in_range(ssim, ssim_low, ssim_high) and top_is_target(probs, target)
            and target_confidence(probs, target, confidence_mode) > confidence)


def official_keep(ssim: float, probs: torch.Tensor, target: torch.Tensor,
                  ssim_low: float = OFFICIAL_CRITIC["ssim_low"],
                  ssim_high: float = OFFICIAL_CRITIC["ssim_high"]) -> bool:
    """Official test.py: an edit is kept when SSIM is in range OR the top class is the target."""
    return ssim_in_range(ssim, ssim_low, ssim_high) or top_is_target(probs, target)


def same_valence_as_target(label: int, target: torch.Tensor) -> bool:
    """Whether a predicted class shares the valence of (any emotion in) the target."""
    groups = [POSITIVE, NEGATIVE]
    emo = EMOTIONS[label]
    return any(emo in g and any(EMOTIONS[i] in g for i in target_support(target)) for g in groups)


# ----------------------------------------------------------------------------------------------
# Per-job state and policies
# ----------------------------------------------------------------------------------------------

@dataclass
class CriticConfig:
    critic: str = "paper"
    num_loop: int = NUM_LOOP
    ssim_low: Optional[float] = None  # None: the policy's default (paper 0.3, official 0.5)
    ssim_high: Optional[float] = None
    confidence: Optional[float] = None  # paper 0.8, official 0.6
    confidence_mode: str = "support"
    direction_probs: str = "source"  # paper policy only; official always uses P(first edit)

    def __post_init__(self):
        if self.critic not in POLICIES:
            raise ValueError(f"unknown critic {self.critic!r}; choose one of {', '.join(POLICIES)}")
        if self.confidence_mode not in CONFIDENCE_MODES:
            raise ValueError(f"unknown confidence mode {self.confidence_mode!r}; choose one of {CONFIDENCE_MODES}")
        if self.direction_probs not in DIRECTION_SOURCES:
            raise ValueError(f"unknown direction_probs {self.direction_probs!r}; choose one of {DIRECTION_SOURCES}")
        if self.num_loop < 1:
            raise ValueError(f"num_loop must be >= 1, got {self.num_loop}")
        defaults = OFFICIAL_CRITIC if self.critic == "official" else PAPER_CRITIC
        for key in ("ssim_low", "ssim_high", "confidence"):
            if getattr(self, key) is None:
                setattr(self, key, defaults[key])


@dataclass
class Iteration:
    """One candidate: what the critic saw and decided.

    `accepted` is the policy's per-candidate rule (paper: the accept rule; official: the keep
    rule, i.e. the edit becomes the next input); None for the single pass, which has no rule.
    """
    index: int
    input_index: int  # which candidate was the edit's input (SOURCE_INDEX: the source)
    ssim: float
    probs: list[float]
    top_class: str
    target_confidence: float
    accepted: Optional[bool]
    start_timestep: Optional[int] = None
    va: Optional[tuple[float, float]] = None  # the (valence, arousal) P's probabilities imply
    nonfinite: bool = False  # the edit had NaN/inf pixels (e.g. float16 overflow), zeroed before scoring

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CriticResult:
    """What a finished critic returns: which image, why, and what P and SSIM said about it.

    `accepted` is True when the policy's success criterion picked the image (paper: it passed the
    accept rule; official: the last prediction was the target or the best target confidence beat
    the threshold) and False when a fallback did (or for the single pass, which judges nothing).
    """
    index: int  # candidate index, or SOURCE_INDEX when the source itself is returned
    reason: str
    accepted: bool
    ssim: float  # SSIM to the source (1.0 for the source)
    probs: tuple[float, ...]  # P's probabilities on the returned image
    target_confidence: float

    @property
    def top_class(self) -> str:
        return EMOTIONS[max(range(len(self.probs)), key=self.probs.__getitem__)]


class Critic:
    """A job's critic: the loop asks it what to edit next and tells it what came out.

    One subclass per ``--critic`` policy; each decides in `_decide` after an iteration is recorded.
    """

    policy = ""

    def __init__(self, config: CriticConfig, target: torch.Tensor, source_probs: torch.Tensor):
        self.config = config
        self.target = torch.as_tensor(target).float().cpu()
        self.source_probs = torch.as_tensor(source_probs).float().cpu()
        self.iterations: list[Iteration] = []
        self.next_input = SOURCE_INDEX  # candidate index the next edit starts from
        self.direction_probs = self.source_probs  # P(...) the encoder's direction input subtracts from the target
        self.done = False
        self.returned: Optional[int] = None
        self.reason = ""
        self.accepted = False

    # -- what the loop asks ----------------------------------------------------------------------

    def needed_candidates(self) -> set[int]:
        """Candidates that may still be an input or the returned image (others can be dropped)."""
        keep = {self.next_input, self.returned} | self._candidates_in_reserve()
        return {i for i in keep if i is not None and i != SOURCE_INDEX}

    def _candidates_in_reserve(self) -> set[int]:
        return set()

    # -- what the loop tells ---------------------------------------------------------------------

    def observe(self, ssim: float, probs: torch.Tensor, start_timestep: Optional[int] = None) -> Iteration:
        """Record the candidate produced from `next_input` and decide what happens next."""
        if self.done:
            raise RuntimeError("the critic has already returned an image")
        probs = torch.as_tensor(probs).float().cpu()
        it = Iteration(index=len(self.iterations), input_index=self.next_input, ssim=float(ssim), probs=probs.tolist(),
                       top_class=EMOTIONS[int(probs.argmax())],
                       target_confidence=target_confidence(probs, self.target, self.config.confidence_mode),
                       accepted=None, start_timestep=start_timestep, va=mixture_to_va(probs))
        self.iterations.append(it)
        self._decide(it, probs)
        return it

    def _decide(self, it: Iteration, probs: torch.Tensor) -> None:
        raise NotImplementedError

    def _finish(self, index: int, reason: str, accepted: bool) -> None:
        self.done, self.returned, self.reason, self.accepted = True, index, reason, accepted

    def _best_conf_index(self) -> Optional[int]:
        if not self.iterations:
            return None
        # earliest among ties, so the choice does not depend on float noise in later iterations
        return max(range(len(self.iterations)), key=lambda i: (self.iterations[i].target_confidence, -i))

    # -- what the loop reads ---------------------------------------------------------------------

    def result(self) -> CriticResult:
        if not self.done:
            raise RuntimeError("the critic has not returned an image yet")
        if self.returned == SOURCE_INDEX:
            ssim, probs = 1.0, self.source_probs.tolist()
            conf = target_confidence(self.source_probs, self.target, self.config.confidence_mode)
        else:
            it = self.iterations[self.returned]
            ssim, probs, conf = it.ssim, it.probs, it.target_confidence
        return CriticResult(self.returned, self.reason, self.accepted, ssim, tuple(probs), conf)

    def trace(self) -> dict:
        cfg = self.config
        trace = {
            "critic": self.policy,
            "thresholds": {"ssim_low": cfg.ssim_low, "ssim_high": cfg.ssim_high, "confidence": cfg.confidence,
                           "confidence_mode": cfg.confidence_mode, "num_loop": cfg.num_loop,
                           "direction_probs": cfg.direction_probs},
            "target": self.target.tolist(),
            "source_probs": self.source_probs.tolist(),
            "source_va": list(mixture_to_va(self.source_probs)),
            "iterations": [it.as_dict() for it in self.iterations],
            "returned": self.returned,
            "reason": self.reason,
            "accepted": self.accepted,
        }
        if self.done:
            res = self.result()
            trace.update(returned_ssim=res.ssim, returned_target_confidence=res.target_confidence,
                         returned_top_class=res.top_class)
        return trace


class SinglePassCritic(Critic):
    """``--critic none``: one edit, returned as is (the paper's "w/o P")."""

    policy = "none"

    def _decide(self, it: Iteration, probs: torch.Tensor) -> None:
        self._finish(it.index, "single pass (--critic none)", accepted=False)


class PaperCritic(Critic):
    """``--critic paper``: accept on SSIM in range and a confident target; else edit the output again."""

    policy = "paper"

    def _candidates_in_reserve(self) -> set[int]:
        return {self._best_conf_index()}

    def _decide(self, it: Iteration, probs: torch.Tensor) -> None:
        cfg = self.config
        it.accepted = paper_accept(it.ssim, probs, self.target, cfg.ssim_low, cfg.ssim_high, cfg.confidence,
                                   cfg.confidence_mode)
        if it.accepted:
            return self._finish(it.index, f"accepted: {cfg.ssim_low} < SSIM {it.ssim:.3f} < {cfg.ssim_high}, "
                                          f"top class {it.top_class}, target confidence "
                                          f"{it.target_confidence:.3f} > {cfg.confidence}", accepted=True)
        if len(self.iterations) >= cfg.num_loop:
            best = self._best_conf_index()
            return self._finish(best, f"none accepted in {cfg.num_loop} iterations: highest target confidence "
                                      f"({self.iterations[best].target_confidence:.3f})", accepted=False)
        self.next_input = it.index
        if cfg.direction_probs == "input":
            self.direction_probs = probs


class OfficialCritic(Critic):
    """``--critic official``: the official test.py's keep/stop/fallback logic, bounded by num_loop."""

    policy = "official"

    def __init__(self, config: CriticConfig, target: torch.Tensor, source_probs: torch.Tensor):
        super().__init__(config, target, source_probs)
        self.kept: list[int] = []  # indices of the edits the keep rule let through (the official pred_Img)
        self._best_tgt: Optional[int] = None
        self._best_tgt_prob = 0.0
        self._best_same: Optional[int] = None
        self._best_same_prob = 0.0

    def _candidates_in_reserve(self) -> set[int]:
        return {self._best_tgt, self._best_same, self.kept[-1] if self.kept else None}

    def _decide(self, it: Iteration, probs: torch.Tensor) -> None:
        cfg = self.config
        if it.index == 0:
            # official: the direction inside the loop is target - P(first edit), never updated again
            self.direction_probs = probs
        it.accepted = official_keep(it.ssim, probs, self.target, cfg.ssim_low, cfg.ssim_high)
        if it.accepted:
            label = int(probs.argmax())
            if same_valence_as_target(label, self.target) and float(probs[label]) > self._best_same_prob:
                self._best_same, self._best_same_prob = it.index, float(probs[label])
            if it.target_confidence > self._best_tgt_prob:
                self._best_tgt, self._best_tgt_prob = it.index, it.target_confidence
            self.kept.append(it.index)
            self.next_input = it.index
        # else: the official drops the edit and edits the last kept image (or the source) again
        # official `while best_tgt_prob < 0.6 and len([source] + kept) < num_loop`, plus our total bound
        stop = (self._best_tgt_prob >= cfg.confidence or len(self.kept) + 1 >= cfg.num_loop
                or len(self.iterations) >= cfg.num_loop)
        if stop:
            self._finish(*self._select(probs))

    def _select(self, probs: torch.Tensor) -> tuple[int, str, bool]:
        cfg = self.config
        last_kept = self.kept[-1] if self.kept else SOURCE_INDEX
        if top_is_target(probs, self.target):
            return last_kept, "last prediction is the target: last kept edit", True
        if self._best_tgt_prob > cfg.confidence:
            return self._best_tgt, f"best target confidence {self._best_tgt_prob:.3f} > {cfg.confidence}", True
        if self._best_same_prob != 0:
            return self._best_same, f"fallback: best same-valence kept edit ({self._best_same_prob:.3f})", False
        if self._best_tgt_prob != 0:
            return self._best_tgt, f"fallback: best target-confidence kept edit ({self._best_tgt_prob:.3f})", False
        if last_kept == SOURCE_INDEX:
            return SOURCE_INDEX, "no edit was kept: the source is returned (official behaviour)", False
        return last_kept, "no kept edit with target confidence: last kept edit", False


POLICIES: dict[str, type[Critic]] = {c.policy: c for c in (PaperCritic, OfficialCritic, SinglePassCritic)}
CRITICS = tuple(POLICIES)  # the --critic choices: paper (default), official, none


def make_critic(config: CriticConfig, target: torch.Tensor, source_probs: torch.Tensor) -> Critic:
    """A fresh critic of `config.critic`'s policy for one job."""
    return POLICIES[config.critic](config, target, source_probs)


def replay(trace: dict, num_loop: int) -> Critic:
    """The critic's decision had the run stopped at `num_loop` (<= the traced run's), from its trace.

    A run with a smaller ``num_loop`` sees exactly a prefix of the same candidates (same seed,
    same inputs), so "metrics at max iterations k" need no re-run: replay the trace's SSIM and
    probabilities through a fresh critic and read its `result()`.
    """
    th = trace["thresholds"]
    if num_loop > th["num_loop"]:
        raise ValueError(f"cannot replay num_loop={num_loop} from a run with num_loop={th['num_loop']}")
    cfg = CriticConfig(trace["critic"], num_loop=num_loop, ssim_low=th["ssim_low"], ssim_high=th["ssim_high"],
                       confidence=th["confidence"], confidence_mode=th["confidence_mode"],
                       direction_probs=th.get("direction_probs", "source"))
    critic = make_critic(cfg, torch.tensor(trace["target"]), torch.tensor(trace["source_probs"]))
    for it in trace["iterations"]:
        critic.observe(it["ssim"], torch.tensor(it["probs"]), it.get("start_timestep"))
        if critic.done:
            return critic
    raise ValueError("the trace ends before its critic finished; was it truncated?")
