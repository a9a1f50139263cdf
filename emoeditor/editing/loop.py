"""Iterative emotion inference, batched: many (image, target) jobs, one critic loop.

Each job carries its own state (critic, generator, candidates). Every step edits the current
input of every active job in one batch, scores the candidates with P and SSIM on the device,
and lets each job's critic decide. A finished job leaves the batch at once and the next queued
job takes its slot (continuous batching), so a long run keeps the accelerator full.

A job's randomness comes only from its own generator, and the pipeline draws each row from
its row's generator. Kernels, however, pick their summation order by tensor shape (a row of a
batch of 16 differs from the same row alone by ~1e-6), so every model call is padded to exactly
`batch_size` rows (`pad_batches=True`): a job's output is then bit-identical whatever else is in
its batch, whatever the queue order and however many processes share the run, for a given
`batch_size`, device, dtype and (on CPU) thread count. Across different `batch_size` values
results agree to float rounding only.

The edit itself is duck-typed (`EditBackend`): anything with ``encode_condition(images)`` and
``edit(images, emotion_inputs, condition, generators) -> (images, start_timesteps)``. The real
one wraps `EmoEditorPipeline` (`PipelineBackend`); tests script fake ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Protocol, Sequence

import torch

from emoeditor.constants import (NOISE_START_RANGE, NUM_INFERENCE_STEPS)
from emoeditor.editing.critic import SOURCE_INDEX, CriticConfig, JobCritic
from emoeditor.emotions import emotion_input
from emoeditor.scoring.ssim import batch_ssim


class EditBackend(Protocol):
    def encode_condition(self, images: torch.Tensor) -> torch.Tensor: ...

    def edit(self, images: torch.Tensor, emotion_inputs: torch.Tensor, condition: torch.Tensor,
             generators: Sequence[torch.Generator]) -> tuple[torch.Tensor, Optional[torch.Tensor]]: ...


class PipelineBackend:
    """One EmoEditorPipeline edit per call; the source's condition latents are encoded once per job."""

    def __init__(self, pipe, num_inference_steps: int = NUM_INFERENCE_STEPS,
                 noise_range: tuple[int, int] = NOISE_START_RANGE, guidance_scale: float = 1.0):
        self.pipe = pipe
        self.num_inference_steps = num_inference_steps
        self.noise_range = tuple(noise_range)
        self.guidance_scale = guidance_scale

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    @torch.no_grad()
    def encode_condition(self, images: torch.Tensor) -> torch.Tensor:
        return self.pipe.encode_condition(images)

    @torch.no_grad()
    def edit(self, images, emotion_inputs, condition, generators):
        out = self.pipe(images, emotion_inputs, condition_latents=condition, generator=list(generators),
                        num_inference_steps=self.num_inference_steps, noise_range=self.noise_range,
                        guidance_scale=self.guidance_scale, output_type="pt")
        return out.images, getattr(out, "start_timesteps", None)


@dataclass
class Job:
    """One (source image, target) edit. `seed` seeds the job's generator unless `generator` is given."""
    image: torch.Tensor  # (3, H, W) in [0, 1]
    target: torch.Tensor  # (8,) non-negative, sums to 1
    seed: int = 0
    name: str = ""
    generator: Optional[torch.Generator] = None
    meta: dict = field(default_factory=dict)


@dataclass
class JobResult:
    job: Job
    image: torch.Tensor  # (3, H, W) in [0, 1], on the CPU
    trace: dict
    candidates: Optional[list[torch.Tensor]] = None  # every iteration's image (keep_candidates=True)


@dataclass
class _Active:
    job: Job
    critic: JobCritic
    generator: torch.Generator
    source: torch.Tensor  # (3, H, W) on the device
    condition: torch.Tensor
    images: dict  # candidate index -> (3, H, W) on the device (only those the critic may still need)
    kept: list  # every candidate on the CPU when keep_candidates


class IterativeInference:
    """The critic loop over a stream of jobs, `batch_size` at a time.

    predictor: callable (B, 3, H, W) [0, 1] -> (B, 8) probabilities (EmotionPredictor.probs).
    emotion_input_mode: 'direction' (target - P(...), see CriticConfig.direction_probs) or 'onehot'.
    ssim_backend: 'torch' (batched on the device), 'skimage' (the official reference, CPU) or a
        callable (sources, images) -> (B,) for tests.
    """

    def __init__(self, backend: EditBackend, predictor: Callable[[torch.Tensor], torch.Tensor],
                 critic: CriticConfig, emotion_input_mode: str = "direction", batch_size: int = 8,
                 ssim_backend: str | Callable = "torch", device: Optional[torch.device | str] = None,
                 keep_candidates: bool = False, pad_batches: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.predictor = predictor
        self.critic = critic
        self.emotion_input_mode = emotion_input_mode
        self.batch_size = batch_size
        self.ssim_backend = ssim_backend
        self.device = torch.device(device if device is not None else getattr(backend, "device", "cpu"))
        self.keep_candidates = keep_candidates
        self.pad_batches = pad_batches

    def _pad(self, rows: torch.Tensor) -> torch.Tensor:
        """Fill a partial batch up to batch_size with copies of its first row (results discarded)."""
        n = rows.shape[0]
        if not self.pad_batches or n >= self.batch_size:
            return rows
        return torch.cat([rows, rows[:1].expand(self.batch_size - n, *rows.shape[1:])])

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.predictor(self._pad(images)).float().cpu()[: images.shape[0]]

    # -- admission ---------------------------------------------------------------------------

    def _admit(self, jobs: list[Job]) -> list[_Active]:
        sources = torch.stack([j.image for j in jobs]).to(self.device, torch.float32)
        with torch.no_grad():
            probs = self._predict(sources)
            condition = self.backend.encode_condition(self._pad(sources))[: len(jobs)]
        admitted = []
        for i, job in enumerate(jobs):
            gen = job.generator
            if gen is None:
                gen = torch.Generator(self.device).manual_seed(int(job.seed))
            critic = JobCritic(self.critic, job.target, probs[i])
            admitted.append(_Active(job, critic, gen, sources[i], condition[i], {}, []))
        return admitted

    def _emotion_input(self, state: _Active) -> torch.Tensor:
        probs = state.critic.direction_probs if self.emotion_input_mode == "direction" else None
        return emotion_input(state.critic.target, probs, self.emotion_input_mode)

    # -- the loop ------------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, jobs: Iterable[Job]) -> Iterator[JobResult]:
        """Yield each job's result as soon as it finishes (not in input order when batched)."""
        queue = iter(jobs)
        active: list[_Active] = []
        exhausted = False
        while True:
            if not exhausted and len(active) < self.batch_size:
                incoming = []
                for job in queue:
                    incoming.append(job)
                    if len(active) + len(incoming) >= self.batch_size:
                        break
                else:
                    exhausted = True
                if incoming:
                    active.extend(self._admit(incoming))
            if not active:
                return
            self._step(active)
            still = []
            for state in active:
                if state.critic.done:
                    yield self._result(state)
                else:
                    still.append(state)
            active = still

    def _step(self, active: list[_Active]) -> None:
        inputs = torch.stack([s.source if s.critic.next_input == SOURCE_INDEX else s.images[s.critic.next_input]
                              for s in active])
        emo = torch.stack([self._emotion_input(s) for s in active]).to(self.device)
        condition = torch.stack([s.condition for s in active])
        generators = [s.generator for s in active]
        if self.pad_batches:  # padding rows draw from throwaway generators
            generators += [torch.Generator(self.device).manual_seed(0) for _ in range(self.batch_size - len(active))]
        images, timesteps = self.backend.edit(self._pad(inputs), self._pad(emo), self._pad(condition), generators)
        images = images[: len(active)].to(self.device, torch.float32)
        nonfinite = (~torch.isfinite(images)).flatten(1).any(1).tolist()
        images = torch.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
        probs = self._predict(images)
        sources = torch.stack([s.source for s in active])
        if callable(self.ssim_backend):
            ssim = self.ssim_backend(sources, images)
        else:
            ssim = batch_ssim(sources, images, backend=self.ssim_backend)
        for i, state in enumerate(active):
            index = len(state.critic.iterations)
            state.images[index] = images[i]
            if self.keep_candidates:
                state.kept.append(images[i].cpu())
            t = None if timesteps is None else int(torch.as_tensor(timesteps).flatten()[i])
            it = state.critic.observe(float(ssim[i]), probs[i], start_timestep=t)
            it.nonfinite = nonfinite[i]
            needed = state.critic.needed_candidates()
            state.images = {k: v for k, v in state.images.items() if k in needed}

    def _result(self, state: _Active) -> JobResult:
        critic = state.critic
        image = state.source if critic.returned == SOURCE_INDEX else state.images[critic.returned]
        trace = critic.trace()
        trace.update(name=state.job.name, seed=int(state.job.seed), **state.job.meta)
        return JobResult(state.job, image.cpu(), trace, state.kept if self.keep_candidates else None)


def run_jobs(engine: IterativeInference, jobs: Sequence[Job]) -> list[JobResult]:
    """All results, in the order of `jobs`."""
    order = {id(j): i for i, j in enumerate(jobs)}
    results = list(engine.run(jobs))
    return sorted(results, key=lambda r: order[id(r.job)])

