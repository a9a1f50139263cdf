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

from .constants import IP2P_HUB_ID, NOISE_START_RANGE, NUM_INFERENCE_STEPS
from .critic import CriticConfig
from .editors import EditResult, Editor
from .inference import IterativeInference, Job, PipelineBackend, load_model, run_jobs
from .predictor import EmotionPredictor, load_predictor


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
