"""The batched critic loop: scripted backends for its bookkeeping, the tiny pipeline for determinism."""

import pytest
import torch

from emoeditor.editing.critic import SOURCE_INDEX, CriticConfig
from emoeditor.editing.loop import IterativeInference, Job, run_jobs
from emoeditor.editing.pipeline import EmoEditorPipeline
from emoeditor.editors.base import Editor, EditResult
from emoeditor.editors.emoeditor import EmoEditorEditor
from emoeditor.emotions import emotion_input, onehot
from emoeditor.models.components import load_base_components
from emoeditor.models.predictor import load_predictor
from emoeditor.models.tiny import TINY_IMAGE_SIZE, tiny_emotion_encoder

S = 16  # scripted tests use small images


class FakeBackend(Editor):
    """out = 0.8 * input + 0.2 * (0.5 + U(0, 1)), U from the row's generator: brightens; records every call
    with the emotion input EmoEditor would feed its encoder (target - reference P, or the target)."""

    device = torch.device("cpu")

    def __init__(self, mode="direction"):
        self.calls = []
        self.mode = mode

    def prepare(self, sources):
        return sources * 2 - 1

    def edit(self, images, targets, generators):
        raise AssertionError("the critic loop calls edit_step")

    def edit_step(self, request):
        emo = emotion_input(request.targets, request.reference_probs, self.mode)
        self.calls.append(dict(inputs=request.inputs.clone(), emo=emo.clone(), cond=request.prepared.clone(),
                               gens=list(request.generators)))
        noise = torch.stack([torch.rand(request.inputs.shape[1:], generator=g) for g in request.generators])
        return EditResult(0.8 * request.inputs + 0.2 * (0.5 + noise),
                          start_timesteps=torch.tensor([700 + int(1000 * n.mean()) % 280 for n in noise]))


def brightness_predictor(images):
    """P puts mass on 'awe' (index 2) as the image brightens: a deterministic function of the pixels."""
    m = images.mean(dim=(1, 2, 3))
    logits = torch.zeros(images.shape[0], 8)
    logits[:, 2] = 40 * (m - 0.5)
    return torch.softmax(logits, -1)


def fixed_ssim(value):
    return lambda sources, images: torch.full((images.shape[0],), value, dtype=torch.float64)


def make_jobs(n, seed0=0):
    g = torch.Generator().manual_seed(99)
    return [Job(image=torch.rand(3, S, S, generator=g) * (0.3 + 0.05 * i), target=onehot("awe"), seed=seed0 + i + 1,
                name=f"job{i}") for i in range(n)]


def engine(backend, critic="paper", batch_size=1, ssim=0.5, keep=False, num_loop=30, mode="direction"):
    backend.mode = mode
    return IterativeInference(backend, brightness_predictor, CriticConfig(critic, num_loop=num_loop),
                              batch_size=batch_size, ssim_backend=fixed_ssim(ssim), return_candidates=keep)


def test_never_more_than_num_loop_and_fallback():
    backend = FakeBackend()
    results = run_jobs(engine(backend, ssim=0.95, num_loop=4, batch_size=3), make_jobs(5))  # SSIM never passes
    assert len(results) == 5
    for r in results:
        its = r.trace["iterations"]
        assert len(its) == 4 and not r.trace["accepted"]
        best = max(range(4), key=lambda i: its[i]["target_confidence"])
        assert r.trace["returned"] == best
    assert sum(sum(g.initial_seed() != 0 for g in c["gens"]) for c in backend.calls) == 5 * 4


def test_paper_loop_chains_outputs_keeps_the_source_condition_and_direction():
    backend = FakeBackend()
    job = make_jobs(1)[0]
    (r,) = run_jobs(engine(backend, keep=True, num_loop=6), [job])
    n = len(r.trace["iterations"])
    assert len(backend.calls) == n and len(r.candidates) == n
    assert torch.equal(backend.calls[0]["inputs"][0], job.image)
    for k in range(1, n):
        assert torch.equal(backend.calls[k]["inputs"][0], r.candidates[k - 1])  # output -> next input
        assert torch.equal(backend.calls[k]["cond"], backend.calls[0]["cond"])  # source stays the condition
    p_src = brightness_predictor(job.image[None])[0]
    for c in backend.calls:
        assert torch.allclose(c["emo"][0], onehot("awe") - p_src)  # target - P(source), fixed
    ret = r.trace["returned"]
    assert torch.equal(r.image, r.candidates[ret])


def test_accepts_when_the_rule_passes():
    # the fake brightens; awe confidence passes 0.8 once the mean exceeds ~0.58
    (r,) = run_jobs(engine(FakeBackend(), ssim=0.5), [make_jobs(1)[0]])
    its = r.trace["iterations"]
    assert r.trace["accepted"] and r.trace["returned"] == len(its) - 1
    assert all(not it["accepted"] for it in its[:-1]) and its[-1]["target_confidence"] > 0.8


def test_onehot_mode_feeds_the_target():
    backend = FakeBackend()
    run_jobs(engine(backend, mode="onehot", num_loop=2, ssim=0.95), make_jobs(2))
    assert all(torch.equal(row, onehot("awe")) for c in backend.calls for row in c["emo"])


def test_continuous_batching_refills_slots_and_matches_running_alone():
    jobs = make_jobs(7)
    backend = FakeBackend()
    batched = run_jobs(engine(backend, batch_size=3, keep=True), jobs)
    sizes = [len(c["gens"]) for c in backend.calls]
    # jobs finish at different iterations; while jobs are queued, every step is full
    lengths = sorted(len(r.trace["iterations"]) for r in batched)
    assert len(set(lengths)) > 1
    total = sum(lengths)
    assert all(s == 3 for s in sizes)  # padded to a fixed shape
    real = [len(c["gens"]) - sum(g.initial_seed() == 0 for g in c["gens"]) for c in backend.calls]
    assert sum(real) == total
    full_until = next(i for i, n in enumerate(real) if n < 3) if min(real) < 3 else len(real)
    assert sum(real[:full_until]) >= total - 2 * 3  # only the tail runs partly empty
    alone = [run_jobs(engine(FakeBackend(), batch_size=3, keep=True), [Job(j.image, j.target, j.seed, j.name)])[0]
             for j in jobs]
    for a, b in zip(alone, batched):
        assert a.job.name == b.job.name
        assert torch.equal(a.image, b.image)
        assert a.trace["iterations"] == b.trace["iterations"]


def test_official_policy_reedits_the_last_kept_image():
    backend = FakeBackend()
    # SSIM 0.95 and P's top class not the target early on -> dropped; the source is edited again
    (r,) = run_jobs(engine(backend, critic="official", ssim=0.95, num_loop=5, keep=True), [make_jobs(1)[0]])
    its = r.trace["iterations"]
    for k, it in enumerate(its):
        expected = max([i for i in range(k) if its[i]["accepted"]], default=SOURCE_INDEX)
        assert it["input_index"] == expected
        src = make_jobs(1)[0].image if expected == SOURCE_INDEX else r.candidates[expected]
        assert torch.equal(backend.calls[k]["inputs"][0], src)
        # direction: target - P(source) first, then target - P(first edit) for good
        ref = make_jobs(1)[0].image if k == 0 else r.candidates[0]
        assert torch.allclose(backend.calls[k]["emo"][0], onehot("awe") - brightness_predictor(ref[None])[0])
    assert len(its) <= 5


def test_none_critic_is_one_edit():
    backend = FakeBackend()
    results = run_jobs(engine(backend, critic="none", batch_size=4), make_jobs(3))
    assert len(backend.calls) == 1 and all(len(r.trace["iterations"]) == 1 for r in results)


# ---------------------------------------------------------------- the real (tiny) pipeline

@pytest.fixture(scope="module")
def tiny(tiny_base_dir, tiny_predictor_dir):
    pipe = EmoEditorPipeline(emotion_encoder=tiny_emotion_encoder(0),
                             **load_base_components(tiny_base_dir, text=False))
    pipe.set_progress_bar_config(disable=True)
    return pipe, load_predictor(tiny_predictor_dir)


def tiny_engine(pipe, predictor, batch_size, num_loop=3):
    # wide thresholds so some random-weight jobs accept early and others run to num_loop
    critic = CriticConfig("paper", num_loop=num_loop, ssim_low=-1.0, ssim_high=1.0, confidence=0.14)
    return IterativeInference(EmoEditorEditor(pipe, predictor, num_inference_steps=2), predictor.probs, critic,
                              batch_size=batch_size)


def test_same_job_same_bytes_alone_or_in_a_batch_of_16(tiny):
    pipe, predictor = tiny
    g = torch.Generator().manual_seed(5)
    images = torch.rand(16, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=g)
    jobs = [Job(images[i], onehot(i % 8), seed=1000 + i, name=str(i)) for i in range(16)]
    batched = run_jobs(tiny_engine(pipe, predictor, 16), jobs)
    assert len({len(r.trace["iterations"]) for r in batched}) > 1  # jobs leave the batch at different times
    for i in (0, 11):  # alone in the queue of a batch-16 engine: padded to the same shape
        (alone,) = run_jobs(tiny_engine(pipe, predictor, 16), [Job(images[i], onehot(i % 8), seed=1000 + i)])
        assert torch.equal(alone.image, batched[i].image)
        assert [it["start_timestep"] for it in alone.trace["iterations"]] == \
               [it["start_timestep"] for it in batched[i].trace["iterations"]]
    # a job's output depends on its seed
    (other,) = run_jobs(tiny_engine(pipe, predictor, 16), [Job(images[0], onehot(0), seed=1)])
    assert not torch.equal(other.image, batched[0].image)
    # unpadded batch-1 runs differ from batch-16 runs only by float rounding
    (b1,) = run_jobs(tiny_engine(pipe, predictor, 1), [Job(images[5], onehot(5), seed=1005)])
    assert len(b1.trace["iterations"]) == len(batched[5].trace["iterations"])
    torch.testing.assert_close(b1.image, batched[5].image, rtol=0, atol=1e-3)


def test_nonfinite_edits_are_flagged_and_scored_as_zeros():
    class NaNBackend(FakeBackend):
        def edit_step(self, request):
            out = super().edit_step(request)
            out.images[:, :, :4] = float("nan")
            return out

    (r,) = run_jobs(engine(NaNBackend(), num_loop=2, ssim=0.95, keep=True), make_jobs(1))
    assert all(it["nonfinite"] for it in r.trace["iterations"])
    assert torch.isfinite(r.image).all() and (r.candidates[0][:, :4] == 0).all()


def test_on_step_reports_every_job_iteration():
    counts = []
    loop = IterativeInference(FakeBackend(), brightness_predictor, CriticConfig("paper", num_loop=4), batch_size=3,
                              ssim_backend=fixed_ssim(0.95), on_step=counts.append)
    results = run_jobs(loop, make_jobs(5))
    assert sum(counts) == sum(len(r.trace["iterations"]) for r in results) == 5 * 4
    assert max(counts) == 3  # at most batch_size jobs per step
