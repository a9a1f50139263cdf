"""EmoEditor behind the one Editor interface: one diffusion edit, and the presets of Table 1's rows.

`EmoEditorEditor.edit` is one edit (paper Sec. 3.2): the emotion encoder's input is the target
minus P's probabilities on the source ("direction", what the released weights use) or the
one-hot target, and the source is the condition. Inside the critic loop (`CriticLoop`, paper
Sec. 3.3) the source stays the condition while the input is the previous output, and the critic
chooses which P probabilities the direction subtracts. "ours" is the loop with the paper's
critic; "w/o P" has two readings (see `PRESETS` below and docs/reproducing_table1.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from emoeditor.constants import IP2P_HUB_ID, NOISE_START_RANGE, NUM_INFERENCE_STEPS
from emoeditor.editing.intensity import INTENSITIES, intensity_settings
from emoeditor.editing.loading import load_model
from emoeditor.editors.base import Editor, EditRequest, EditResult
from emoeditor.editors.critic_options import CRITIC_OPTIONS, critic_loop
from emoeditor.editors.registry import (
    DTYPES,
    MethodContext,
    choice,
    parse_typed,
    positive_int,
    register_editor,
    register_preset,
)
from emoeditor.emotions import emotion_input
from emoeditor.errors import MethodError
from emoeditor.models.predictor import EmotionPredictor, load_predictor


class EmoEditorEditor(Editor):
    """One EmoEditorPipeline edit per call; `prepare` encodes the sources' condition latents once."""

    name = "emoeditor"

    def __init__(self, pipe, predictor: Optional[EmotionPredictor] = None, emotion_input: Optional[str] = None,
                 num_inference_steps: int = NUM_INFERENCE_STEPS, noise_range: tuple[int, int] = NOISE_START_RANGE,
                 guidance_scale: float = 1.0, emotion_guidance: float = 1.0, direction_scale: float = 1.0):
        self.pipe = pipe
        self.predictor = predictor
        self.emotion_input = emotion_input or pipe.config.emotion_input
        if self.emotion_input == "direction" and predictor is None:
            raise MethodError("EmoEditor's direction input (target - P(source)) needs the emotion predictor P; "
                              "pass one, or use emotion_input='onehot'")
        self.num_inference_steps = num_inference_steps
        self.noise_range = tuple(noise_range)
        self.guidance_scale = guidance_scale
        self.emotion_guidance = emotion_guidance  # eps(tau(0)) + s (eps(tau(d)) - eps(tau(0))); see the pipeline
        self.direction_scale = direction_scale  # the encoder's input is direction_scale * (target - P(...))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, predictor_path: Optional[str | Path] = None,
                        device: str | torch.device = "cpu", torch_dtype: Optional[torch.dtype] = None,
                        base_model: str | Path = IP2P_HUB_ID, **kwargs) -> "EmoEditorEditor":
        """From an exported pipeline folder (or the official .pt files) and a predictor path."""
        pipe = load_model(model_dir, base_model, torch_dtype, device)
        predictor = load_predictor(predictor_path, device=device) if predictor_path is not None else None
        return cls(pipe, predictor, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    @torch.no_grad()
    def prepare(self, sources: torch.Tensor) -> torch.Tensor:
        return self.pipe.encode_condition(sources)

    @torch.no_grad()
    def edit_step(self, request: EditRequest) -> EditResult:
        probs = request.reference_probs
        if self.emotion_input == "direction" and probs is None:
            probs = self.predictor.probs(request.source_images.to(self.device)).float()
        emotions = emotion_input(request.targets.to(self.device).float(),
                                 None if probs is None else probs.to(self.device).float(), self.emotion_input)
        if self.direction_scale != 1:
            emotions = self.direction_scale * emotions
        out = self.pipe(request.inputs, emotions, condition_latents=request.prepared,
                        generator=list(request.generators),
                        num_inference_steps=self.num_inference_steps, noise_range=self.noise_range,
                        guidance_scale=self.guidance_scale, emotion_guidance=self.emotion_guidance, output_type="pt")
        return EditResult(images=out.images, start_timesteps=getattr(out, "start_timesteps", None))

    def describe(self, sources: torch.Tensor, targets: torch.Tensor) -> list[dict]:
        """The emotion controls of the edit, for every row's trace."""
        record = {"method": self.name, "emotion_input": self.emotion_input, "emotion_guidance": self.emotion_guidance,
                  "direction_scale": self.direction_scale, "guidance_scale": self.guidance_scale,
                  "num_inference_steps": self.num_inference_steps, "noise_range": list(self.noise_range)}
        return [dict(record) for _ in range(sources.shape[0])]

    def edit(self, images: torch.Tensor, targets: torch.Tensor,
             generators: Sequence[torch.Generator]) -> EditResult:
        return self.edit_step(EditRequest(images.to(self.device), targets, generators))


# Table 1's rows. "w/o P" removes the critic (one edit) and keeps P in the direction input, as the
# released model needs it; "w/o P (one-hot)" removes P everywhere (one-hot encoder input, no critic).
register_preset("ours", "emoeditor", {}, "Ours")
register_preset("wo_P", "emoeditor", {"critic": "none"}, "w/o P")
register_preset("wo_P_onehot", "emoeditor", {"critic": "none", "emotion_input": "onehot"}, "w/o P")
register_preset("wo_Lemb", "emoeditor", {}, "w/o L_emb",
                required=("model", "a model trained with `train.py --lambda_emb 0`"))
register_preset("ours_official", "emoeditor", {"critic": "official"}, None)

OPTIONS = {
    "model": str, "predictor": str, "base_model": str, "dtype": choice(*DTYPES), "batch_size": positive_int,
    "num_inference_steps": positive_int, "emotion_input": choice("direction", "onehot"), "guidance_scale": float,
    "emotion_guidance": float, "direction_scale": float, "intensity": choice(*INTENSITIES), **CRITIC_OPTIONS,
}
PATHS = {"model": "an EmoEditor model folder (train.py's export, or the official .pt files)",
         "predictor": "the emotion predictor P (a folder or emo_predictor.pt)"}


@register_editor("emoeditor", options=OPTIONS, paths=PATHS)
def _emoeditor(options: dict, context: MethodContext) -> Editor:
    """EmoEditor in the batched critic loop. Options: model, predictor, the critic's (critic,
    num_loop, ssim_low, ssim_high, confidence, confidence_mode, direction_probs), dtype, batch_size,
    return_candidates, intensity (low/medium/high: emotion_guidance and the critic's thresholds), and any
    keyword of EmoEditorEditor (num_inference_steps, emotion_input, guidance_scale, emotion_guidance,
    direction_scale) and base_model."""
    opts = dict(options)
    model = opts.pop("model", None) or context.model
    predictor = opts.pop("predictor", None) or context.predictor
    if model is None:
        raise MethodError("EmoEditor needs a model folder: pass --model or :model=<folder>")
    if predictor is None:
        raise MethodError("EmoEditor needs the emotion predictor for its critic: pass --predictor")
    batch_size = int(opts.pop("batch_size", context.batch_size))
    for key, value in intensity_settings(opts.pop("intensity")).items() if "intensity" in opts else ():
        opts.setdefault(key, str(value))  # the preset fills what the spec does not set itself
    loop_options = {k: opts.pop(k) for k in CRITIC_OPTIONS if k in opts}
    kwargs = {}
    steps = opts.pop("num_inference_steps", context.num_inference_steps)
    if steps is not None:
        kwargs["num_inference_steps"] = int(steps)
    dtype = opts.pop("dtype", context.extra.get("dtype"))
    if dtype:
        if dtype not in DTYPES:
            raise MethodError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
        kwargs["torch_dtype"] = DTYPES[dtype]
    for key, value in opts.items():  # EmoEditorEditor's keywords (OPTIONS checked the names), typed
        kwargs[key] = parse_typed(value)
    editor = EmoEditorEditor.from_pretrained(model, predictor, device=context.device, **kwargs)
    return critic_loop(editor, editor.predictor.probs, loop_options, context, batch_size)
