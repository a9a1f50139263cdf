"""Iterative emotion inference, batched: many (image, target) jobs, one critic loop.

Each job carries its own state (critic, generator, candidates). Every step edits the current
input of every active job in one batch, scores the candidates with P and SSIM on the device,
and lets each job's critic decide. A finished job leaves the batch at once and the next queued
job takes its slot (continuous batching), so a long run keeps the accelerator full.

A job's randomness comes only from its own generator, and the editor draws each row from
its row's generator. Kernels, however, pick their summation order by tensor shape (a row of a
batch of 16 differs from the same row alone by ~1e-6), so every model call is padded to exactly
`batch_size` rows (`pad_batches=True`): a job's output is then bit-identical whatever else is in
its batch, whatever the queue order and however many processes share the run, for a given
`batch_size`, device, dtype and (on CPU) thread count. Across different `batch_size` values
results agree to float rounding only.

The edit is any `Editor` (EmoEditor's one diffusion edit, or a baseline): the loop calls its
`prepare` once per job and its `edit_step` every iteration. `CriticLoop` is the loop as an
Editor itself, which is what the evaluation and `EmoEditor` with a critic use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch

from emoeditor.editing.critic import SOURCE_INDEX, Critic, CriticConfig, CriticResult, make_critic
from emoeditor.editors.base import Editor, EditRequest, EditResult
from emoeditor.scoring.ssim import batch_ssim

Predictor = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) in [0, 1] -> (B, 8) probabilities


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
    critic: CriticResult  # which candidate was returned, why, and its SSIM / P scores
    candidates: Optional[list[torch.Tensor]] = None  # every iteration's image (return_candidates=True)


@dataclass
class _Active:
    job: Job
    critic: Critic
    generator: torch.Generator
    source: torch.Tensor  # (3, H, W) on the device
    prepared: Optional[torch.Tensor]  # the editor's per-source state (EmoEditor: condition latents)
    images: dict  # candidate index -> (3, H, W) on the device (only those the critic may still need)
    candidates: list  # every candidate on the CPU when return_candidates


class IterativeInference:
    """The critic loop over a stream of jobs, `batch_size` at a time.

    editor: the edit to repeat (its `prepare` and `edit_step`).
    predictor: callable (B, 3, H, W) [0, 1] -> (B, 8) probabilities (EmotionPredictor.probs).
    ssim_backend: 'torch' (batched on the device), 'skimage' (the official reference, CPU) or a
        callable (sources, images) -> (B,) for tests.
    on_step: called after every batched step with the number of job-iterations it ran (progress bars).
    """

    def __init__(self, editor: Editor, predictor: Predictor, critic: CriticConfig, batch_size: int = 8,
                 ssim_backend: str | Callable = "torch", device: Optional[torch.device | str] = None,
                 return_candidates: bool = False, pad_batches: bool = True,
                 on_step: Optional[Callable[[int], None]] = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.editor = editor
        self.predictor = predictor
        self.critic = critic
        self.batch_size = batch_size
        self.ssim_backend = ssim_backend
        self.device = torch.device(device if device is not None else getattr(editor, "device", "cpu"))
        self.return_candidates = return_candidates
        self.pad_batches = pad_batches
        self.on_step = on_step

    def _pad(self, rows: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Fill a partial batch up to batch_size with copies of its first row (results discarded)."""
        if rows is None or not self.pad_batches or rows.shape[0] >= self.batch_size:
            return rows
        return torch.cat([rows, rows[:1].expand(self.batch_size - rows.shape[0], *rows.shape[1:])])

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.predictor(self._pad(images)).float().cpu()[: images.shape[0]]

    # -- admission ---------------------------------------------------------------------------

    def _admit(self, jobs: list[Job]) -> list[_Active]:
        sources = torch.stack([j.image for j in jobs]).to(self.device, torch.float32)
        with torch.no_grad():
            probs = self._predict(sources)
            prepared = self.editor.prepare(self._pad(sources))
        admitted = []
        for i, job in enumerate(jobs):
            gen = job.generator
            if gen is None:
                gen = torch.Generator(self.device).manual_seed(int(job.seed))
            critic = make_critic(self.critic, job.target, probs[i])
            admitted.append(_Active(job, critic, gen, sources[i], None if prepared is None else prepared[i], {}, []))
        return admitted

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
            if self.on_step is not None:
                self.on_step(len(active))
            still = []
            for state in active:
                if state.critic.done:
                    yield self._result(state)
                else:
                    still.append(state)
            active = still

    def _step(self, active: list[_Active]) -> None:
        n = len(active)
        inputs = torch.stack([s.source if s.critic.next_input == SOURCE_INDEX else s.images[s.critic.next_input]
                              for s in active])
        sources = torch.stack([s.source for s in active])
        prepared = None if active[0].prepared is None else torch.stack([s.prepared for s in active])
        generators = [s.generator for s in active]
        if self.pad_batches:  # padding rows draw from throwaway generators
            generators += [torch.Generator(self.device).manual_seed(0) for _ in range(self.batch_size - n)]
        request = EditRequest(
            inputs=self._pad(inputs), generators=generators, sources=self._pad(sources), prepared=self._pad(prepared),
            targets=self._pad(torch.stack([s.critic.target for s in active]).to(self.device)),
            reference_probs=self._pad(torch.stack([s.critic.direction_probs for s in active]).to(self.device)))
        out = self.editor.edit_step(request)
        images = out.images[:n].to(self.device, torch.float32)
        timesteps = out.start_timesteps
        nonfinite = (~torch.isfinite(images)).flatten(1).any(1).tolist()
        images = torch.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
        probs = self._predict(images)
        if callable(self.ssim_backend):
            ssim = self.ssim_backend(sources, images)
        else:
            ssim = batch_ssim(sources, images, backend=self.ssim_backend)
        for i, state in enumerate(active):
            state.images[len(state.critic.iterations)] = images[i]
            if self.return_candidates:
                state.candidates.append(images[i].cpu())
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
        record = self.editor.describe(state.source[None], critic.target[None].to(state.source.device))
        if record:  # what the edit itself used (EmoEditor's controls, a baseline's instruction)
            trace["edit"] = record[0]
        return JobResult(state.job, image.cpu(), trace, critic.result(),
                         state.candidates if self.return_candidates else None)


def run_jobs(engine: IterativeInference, jobs: Sequence[Job]) -> list[JobResult]:
    """All results, in the order of `jobs`."""
    order = {id(j): i for i, j in enumerate(jobs)}
    results = list(engine.run(jobs))
    return sorted(results, key=lambda r: order[id(r.job)])


class CriticLoop(Editor):
    """Any Editor wrapped in the iterative critic loop (paper Sec. 3.3): EmoEditor, or e.g. "Ip2p + critic".

    Each image of a call becomes a job of the batched loop, drawing only from its own generator.
    Every job's trace (each iteration's SSIM, P's 8 probabilities, target confidence, accept flag,
    start timestep, and which candidate was returned and why) comes back in ``EditResult.traces``,
    so "metrics at max iterations k" can be computed with `emoeditor.editing.critic.replay`
    without re-running; with ``return_candidates=True`` every iteration's image comes back in
    ``EditResult.candidates``. `on_step(n)` follows every batched step (n: the jobs it advanced).
    """

    def __init__(self, editor: Editor, predictor: Predictor, critic: Optional[CriticConfig] = None,
                 batch_size: int = 8, ssim_backend: str | Callable = "torch",
                 device: Optional[torch.device | str] = None, return_candidates: bool = False,
                 on_step: Optional[Callable[[int], None]] = None):
        self.editor = editor
        self.name = editor.name
        self.engine = IterativeInference(editor, predictor, critic or CriticConfig(), batch_size=batch_size,
                                         ssim_backend=ssim_backend, device=device,
                                         return_candidates=return_candidates, on_step=on_step)

    @property
    def critic(self) -> CriticConfig:
        return self.engine.critic

    def edit(self, images: torch.Tensor, targets: torch.Tensor,
             generators: Sequence[torch.Generator]) -> EditResult:
        jobs = [Job(image=images[i].float(), target=targets[i].float(), seed=int(generators[i].initial_seed()),
                    name=str(i), generator=generators[i]) for i in range(images.shape[0])]
        results = run_jobs(self.engine, jobs)
        candidates = [r.candidates for r in results] if self.engine.return_candidates else None
        return EditResult(images=torch.stack([r.image for r in results]).to(images.device),
                          traces=[r.trace for r in results], candidates=candidates)
