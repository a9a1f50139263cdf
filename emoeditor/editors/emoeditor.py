"""EmoEditor behind the one Editor interface: iterative emotion inference on a batch of images.

The evaluation harness calls ``edit(images, targets, generators)``; each image becomes a job
of the batched critic loop, drawing only from its own generator. Every job's trace (each
iteration's SSIM, P's 8 probabilities, target confidence, accept flag, start timestep, and
which candidate was returned and why) comes back in ``EditResult.traces``, so "metrics at max
iterations k" can be computed with `emoeditor.critic.replay` without re-running; with
``keep_candidates=True`` each trace also holds every iteration's image (key "candidates").
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from emoeditor.constants import IP2P_HUB_ID, NOISE_START_RANGE, NUM_INFERENCE_STEPS
from emoeditor.editing.critic import CriticConfig
from emoeditor.editors.base import EditResult, Editor
from emoeditor.editors.registry import DTYPES, MethodContext, _bool, _typed, register_editor
from emoeditor.errors import MethodError
from emoeditor.editing.loop import IterativeInference, Job, PipelineBackend, run_jobs
from emoeditor.editing.loading import load_model
from emoeditor.models.predictor import EmotionPredictor, load_predictor


class EmoEditorEditor(Editor):
    name = "emoeditor"

    def __init__(self, pipe, predictor: EmotionPredictor, critic: Optional[CriticConfig] = None,
                 emotion_input: Optional[str] = None, num_inference_steps: int = NUM_INFERENCE_STEPS,
                 noise_range: tuple[int, int] = NOISE_START_RANGE, guidance_scale: float = 1.0,
                 batch_size: int = 8, ssim_backend: str = "torch", keep_candidates: bool = False):
        self.pipe = pipe
        self.predictor = predictor
        self.critic = critic or CriticConfig()
        self.emotion_input = emotion_input or pipe.config.emotion_input
        self.backend = PipelineBackend(pipe, num_inference_steps, noise_range, guidance_scale)
        self.batch_size = batch_size
        self.ssim_backend = ssim_backend
        self.keep_candidates = keep_candidates

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, predictor_path: str | Path, device: str | torch.device = "cpu",
                        torch_dtype: Optional[torch.dtype] = None, base_model: str | Path = IP2P_HUB_ID,
                        **kwargs) -> "EmoEditorEditor":
        """From an exported pipeline folder (or the official .pt files) and a predictor path."""
        pipe = load_model(model_dir, base_model, torch_dtype, device)
        return cls(pipe, load_predictor(predictor_path, device=device), **kwargs)

    def edit(self, images: torch.Tensor, targets: torch.Tensor,
             generators: Sequence[torch.Generator]) -> EditResult:
        device = self.pipe.device
        engine = IterativeInference(self.backend, self.predictor.probs, self.critic, self.emotion_input,
                                    batch_size=self.batch_size, ssim_backend=self.ssim_backend, device=device,
                                    keep_candidates=self.keep_candidates)
        jobs = [Job(image=images[i].float(), target=targets[i].float(), seed=int(generators[i].initial_seed()),
                    name=str(i), generator=generators[i]) for i in range(images.shape[0])]
        results = run_jobs(engine, jobs)
        traces = []
        for r in results:
            trace = dict(r.trace)
            if self.keep_candidates:
                trace["candidates"] = r.candidates
            traces.append(trace)
        out = torch.stack([r.image for r in results]).to(images.device)
        return EditResult(images=out, traces=traces)


CRITIC_OPTIONS = ("critic", "num_loop", "ssim_low", "ssim_high", "confidence", "confidence_mode", "direction_probs")


@register_editor("emoeditor")
def _emoeditor(options: dict, context: MethodContext) -> Editor:
    """EmoEditor with the batched critic loop. Options: model, predictor, the critic's (critic,
    num_loop, ssim_low, ssim_high, confidence, confidence_mode, direction_probs), dtype, and any
    keyword of EmoEditorEditor (num_inference_steps, emotion_input, guidance_scale, batch_size, ...)."""
    from emoeditor.constants import NUM_LOOP
    from emoeditor.editing.critic import CriticConfig
    from emoeditor.editors.emoeditor import EmoEditorEditor

    opts = dict(options)
    model = opts.pop("model", None) or context.model
    predictor = opts.pop("predictor", None) or context.predictor
    if model is None:
        raise MethodError("EmoEditor needs a model folder: pass --model or :model=<folder>")
    if predictor is None:
        raise MethodError("EmoEditor needs the emotion predictor for its critic: pass --predictor")
    critic = {k: _typed(opts.pop(k)) for k in CRITIC_OPTIONS if k in opts}
    critic.setdefault("critic", context.critic)
    critic.setdefault("num_loop", context.num_loop or NUM_LOOP)
    kwargs = dict(batch_size=int(opts.pop("batch_size", context.batch_size)),
                  keep_candidates=_bool(opts.pop("keep_candidates", context.keep_candidates)))
    steps = opts.pop("num_inference_steps", context.num_inference_steps)
    if steps is not None:
        kwargs["num_inference_steps"] = int(steps)
    dtype = opts.pop("dtype", context.extra.get("dtype"))
    if dtype:
        if dtype not in DTYPES:
            raise MethodError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        kwargs["torch_dtype"] = DTYPES[dtype]
    for key, value in opts.items():  # anything else goes through as a typed keyword
        kwargs[key] = _typed(value)
    if critic["critic"] == "none":
        kwargs["keep_candidates"] = False  # one pass: the output is the only candidate
    try:
        config = CriticConfig(**critic)
    except (TypeError, ValueError) as exc:
        raise MethodError(f"EmoEditor critic options {critic}: {exc}") from None
    return EmoEditorEditor.from_pretrained(model, predictor, device=context.device, critic=config, **kwargs)
