"""--train_timesteps official: the training timesteps the official train.py actually draws.

Its loop draws t ~ U{0 .. scheduler.config.num_train_timesteps - 1}; its preview edit (ip2p.forward) at
iteration 0 and every 10,000 iterations, after that iteration's draw, writes T ~ U{700..980} to
`scheduler.config.num_train_timesteps` of the same scheduler, and diffusers' FrozenDict lets the write
through. The transcription below runs those lines on the real diffusers DDIMScheduler.
"""

import pytest
import torch
from repo_scripts import load_script
from safetensors.torch import load_file
from tiny_training import loss_inputs, tiny_model, tiny_train_args

from emoeditor.cli import train as train_cli
from emoeditor.constants import NOISE_START_RANGE, NUM_TRAIN_TIMESTEPS, OFFICIAL_PREVIEW_EVERY
from emoeditor.models.components import sd_v1_ddim_scheduler
from emoeditor.training import checkpoint as ckpt
from emoeditor.training import trainer as training


def official_loop_timesteps(preview_Ts, num_iters, every, batch=4, seed=0):
    """The official train.py's timestep lines (and ip2p.forward's scheduler lines), transcribed.

    Returns per iteration the bound read from the scheduler and the timesteps drawn with it."""
    from diffusers import DDIMScheduler

    scheduler = sd_v1_ddim_scheduler()  # ip2p.py: DDIMScheduler.from_pretrained(SD v1-4) ...
    assert isinstance(scheduler, DDIMScheduler)
    scheduler.set_timesteps(100)  # ... ; pipe.scheduler.set_timesteps(100)
    Ts = iter(preview_Ts)
    g = torch.Generator().manual_seed(seed)
    bounds, drawn = [], []
    for iter_step in range(num_iters):
        # train.py: timesteps = torch.randint(0, ip2p_model.scheduler.config.num_train_timesteps, (B,))
        bounds.append(scheduler.config.num_train_timesteps)
        drawn.append(torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=g))
        if iter_step % every == 0:  # train.py: the preview edit, ip2p_model(...) -> ip2p.forward
            min_step, max_step = int(1000 * 0.70), int(1000 * 0.98)  # num_train_timesteps=1000 (its __init__)
            assert (min_step, max_step) == NOISE_START_RANGE
            T = next(Ts)  # official: torch.randint(min_step, max_step + 1, [1]); injected here
            assert min_step <= T <= max_step
            scheduler.config.num_train_timesteps = T
            scheduler.set_timesteps(20)
            # The FrozenDict guard checks the unmangled name: the attribute write sticks, the dict item does not.
            assert scheduler.config.num_train_timesteps == T
            assert scheduler.config["num_train_timesteps"] == NUM_TRAIN_TIMESTEPS
    return bounds, drawn


@pytest.mark.parametrize("every, num_iters", [(OFFICIAL_PREVIEW_EVERY, 3 * OFFICIAL_PREVIEW_EVERY + 2), (3, 14)])
def test_official_bound_equals_the_official_loop(every, num_iters):
    preview_Ts = [905, 700, 980, 777, 850, 712]
    bounds, drawn = official_loop_timesteps(preview_Ts, num_iters, every)
    ours = [training.official_timestep_bound(step, preview_Ts.__getitem__, every=every) for step in range(num_iters)]
    assert ours == bounds
    # "iteration 0 uses 1000", then each preview's T from the iteration after it up to the next preview's.
    assert bounds[0] == NUM_TRAIN_TIMESTEPS and bounds[1] == bounds[every] == preview_Ts[0]
    assert bounds[every + 1] == preview_Ts[1] and bounds[2 * every + 1] == preview_Ts[2]
    # Drawn with our bound from the same generator state: the very same timesteps.
    g = torch.Generator().manual_seed(0)
    for step in range(num_iters):
        assert torch.equal(torch.randint(0, ours[step], (4,), generator=g), drawn[step])


def test_official_preview_T_is_a_seeded_draw_in_the_official_range():
    lo, hi = NOISE_START_RANGE
    Ts = [training.official_preview_T(0, w) for w in range(200)]
    assert all(lo <= T <= hi for T in Ts) and len(set(Ts)) > 50
    assert Ts == [training.official_preview_T(0, w) for w in range(200)]  # a pure function: resume needs no state
    assert Ts != [training.official_preview_T(1, w) for w in range(200)]
    assert training.timestep_bound("uniform", 12345, 0, NUM_TRAIN_TIMESTEPS) == NUM_TRAIN_TIMESTEPS
    assert training.timestep_bound("official", 0, 0, NUM_TRAIN_TIMESTEPS) == NUM_TRAIN_TIMESTEPS
    assert training.timestep_bound("official", OFFICIAL_PREVIEW_EVERY, 0, NUM_TRAIN_TIMESTEPS) == Ts[0]
    assert training.timestep_bound("official", OFFICIAL_PREVIEW_EVERY + 1, 0, NUM_TRAIN_TIMESTEPS) == Ts[1]


def test_compute_loss_draws_below_the_bound(monkeypatch):
    model, sched, x = tiny_model(), sd_v1_ddim_scheduler(), loss_inputs(batch=64)
    seen = []
    real_add_noise = sched.add_noise
    monkeypatch.setattr(sched, "add_noise", lambda z, n, t: seen.append(t) or real_add_noise(z, n, t))
    with torch.no_grad():
        training.compute_loss(model, sched, **x, generator=torch.Generator().manual_seed(0), num_timesteps=3)
        training.compute_loss(model, sched, **x, generator=torch.Generator().manual_seed(0))
    assert int(seen[0].max()) < 3 and int(seen[1].max()) >= 3


def recorded_bounds(monkeypatch):
    """Patch trainer.compute_loss to record the timestep bound of each micro-batch."""
    real, bounds = training.compute_loss, []

    def recording(*a, num_timesteps=None, **kw):
        bounds.append(num_timesteps)
        return real(*a, num_timesteps=num_timesteps, **kw)

    monkeypatch.setattr(training, "compute_loss", recording)
    return bounds


@pytest.mark.parametrize("mode", ["uniform", "official"])
def test_train_step_uses_the_modes_bound(monkeypatch, mode):
    bench = load_script("scripts/bench_train.py")
    model = tiny_model()
    parts = training.StepParts(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-4),
                               noise_scheduler=sd_v1_ddim_scheduler(),
                               accelerator=bench.SingleProcess(torch.device("cpu")), seed=7, accum=2,
                               train_timesteps=mode)
    bounds = recorded_bounds(monkeypatch)
    steps = [0, 1, OFFICIAL_PREVIEW_EVERY, OFFICIAL_PREVIEW_EVERY + 1, 2 * OFFICIAL_PREVIEW_EVERY + 1]
    for step in steps:
        result = training.train_step(parts, [loss_inputs(batch=1), loss_inputs(seed=2, batch=1)], step)
        assert result.updated and torch.isfinite(result.losses).all()
    T = [training.official_preview_T(7, w) for w in range(3)]
    expected = [1000, T[0], T[0], T[1], T[2]] if mode == "official" else [1000] * 5
    assert bounds == [b for b in expected for _ in range(2)]  # both micro-batches of a step share it


def make_args(tmp_path, tiny_base_dir, toy_emopair, name, **overrides):
    return tiny_train_args(tmp_path / name, tiny_base_dir, *toy_emopair, **{
        "learning_rate": 1e-3, "log_every": 1, "max_steps": 6, "preview_steps": 4, "train_timesteps": "official",
        **overrides})


def test_official_timesteps_run_draws_the_official_bounds_and_resumes_exactly(tmp_path, tiny_base_dir, toy_emopair,
                                                                              monkeypatch):
    monkeypatch.setattr(training, "OFFICIAL_PREVIEW_EVERY", 2)  # previews at steps 0, 2, 4: windows cross the resume
    bounds = recorded_bounds(monkeypatch)
    straight = make_args(tmp_path, tiny_base_dir, toy_emopair, "straight")
    training.train(straight)
    T = [training.official_preview_T(0, w) for w in range(3)]
    assert bounds == [1000, T[0], T[0], T[1], T[1], T[2]]

    bounds.clear()
    training.train(make_args(tmp_path, tiny_base_dir, toy_emopair, "resumed", stop_at_step=3))
    training.train(make_args(tmp_path, tiny_base_dir, toy_emopair, "resumed", resume="latest"))
    assert bounds == [1000, T[0], T[0], T[1], T[1], T[2]]
    weights = [load_file(str(ckpt.list_checkpoints(ckpt.checkpoint_root(tmp_path / run / "models"))[-1]
                             / ckpt.MODEL_FILE)) for run in ("straight", "resumed")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_train_timesteps_flag():
    from emoeditor.config import parse_args

    assert parse_args(train_cli.build_parser(), []).train_timesteps == "uniform"  # the paper
    assert parse_args(train_cli.build_parser(), ["--train_timesteps", "official"]).train_timesteps == "official"
    with pytest.raises(SystemExit):
        parse_args(train_cli.build_parser(), ["--train_timesteps", "official_fp16"])
    with pytest.raises(training.TrainingError, match="--train_timesteps 'both'"):
        training._check_args(train_cli.default_args(train_timesteps="both"), 1)
