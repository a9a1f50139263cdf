"""Training loop on CPU with tiny components and the toy EmoPair: the loss, resume, caching, determinism."""

import json

import pytest
import torch
from repo_scripts import REPO, load_script
from safetensors.torch import load_file
from tiny_training import loss_inputs, tiny_model, tiny_train_args

from emoeditor.cli import train as train_cli
from emoeditor.constants import LATENT_SCALE
from emoeditor.errors import TrainingError
from emoeditor.models.components import sd_v1_ddim_scheduler
from emoeditor.models.tiny import TINY_ENCODER_HIDDEN
from emoeditor.training import checkpoint as ckpt
from emoeditor.training import trainer as training


def make_args(tmp_path, tiny_base_dir, toy_emopair, name="run", **overrides):
    return tiny_train_args(tmp_path / name, tiny_base_dir, *toy_emopair, **{
        "learning_rate": 1e-3, "log_every": 1, "max_steps": 2, "preview_steps": 4, **overrides})


def scalars(args, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(args.train_save_dir + "/tensorboard"))
    acc.Reload()
    return [e.value for e in acc.Scalars(f"train/{tag}")]


def final_weights(args):
    return load_file(str(ckpt.list_checkpoints(ckpt.checkpoint_root(args.save_model_dir))[-1] / ckpt.MODEL_FILE))


def test_compute_loss_equals_independent_computation():
    model, sched, x = tiny_model(), sd_v1_ddim_scheduler(), loss_inputs()
    terms = training.compute_loss(model, sched, **x, generator=torch.Generator().manual_seed(7), lambda_emb=0.5)

    # The same draws by hand: posterior sample, noise, timesteps (that order), then the DDPM forward process.
    g = torch.Generator().manual_seed(7)
    mean, logvar = x["target_moments"].chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    z0 = (mean + std * torch.randn(mean.shape, generator=g)) * LATENT_SCALE
    noise = torch.randn(z0.shape, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    zt = abar.sqrt() * z0 + (1 - abar).sqrt() * noise
    with torch.no_grad():
        e = model.emotion_encoder(x["emotion"])
        eps = model.unet(torch.cat([zt, x["source_latent"]], 1), t, encoder_hidden_states=e).sample
    l_noise = ((eps - noise) ** 2).mean()
    a, c = e.reshape(3, -1), x["text_embedding"].reshape(3, -1)
    l_emb = (1 - (a * c).sum(1) / (a.norm(dim=1) * c.norm(dim=1))).mean()

    torch.testing.assert_close(terms.l_noise, l_noise, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.l_emb, l_emb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.loss, l_noise + 0.5 * l_emb, rtol=1e-5, atol=1e-6)
    assert 0.5 < float(l_emb) < 1.5  # random e and c are near-orthogonal


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_prediction_type_and_noise_offset_by_hand(prediction_type):
    """v prediction's target is sqrt(abar) eps - sqrt(1 - abar) z0 of the noise actually used, and the offset
    noise is a per-image, per-channel constant drawn after the other draws (so offset 0 draws nothing more)."""
    model, x = tiny_model(), loss_inputs()
    sched = training.training_scheduler(sd_v1_ddim_scheduler(), prediction_type)
    assert sched.config.prediction_type == prediction_type
    terms = training.compute_loss(model, sched, **x, generator=torch.Generator().manual_seed(5), lambda_emb=0.0,
                                  noise_offset=0.3)
    g = torch.Generator().manual_seed(5)
    mean, logvar = x["target_moments"].chunk(2, dim=1)
    z0 = (mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * torch.randn(mean.shape, generator=g)) * LATENT_SCALE
    noise = torch.randn(z0.shape, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    noise = noise + 0.3 * torch.randn(3, 4, 1, 1, generator=g)
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    zt = abar.sqrt() * z0 + (1 - abar).sqrt() * noise
    target = noise if prediction_type == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * z0
    with torch.no_grad():
        e = model.emotion_encoder(x["emotion"])
        pred = model.unet(torch.cat([zt, x["source_latent"]], 1), t, encoder_hidden_states=e).sample
    torch.testing.assert_close(terms.l_noise, ((pred - target) ** 2).mean(), rtol=1e-5, atol=1e-6)
    plain = training.compute_loss(model, sched, **x, generator=torch.Generator().manual_seed(5), lambda_emb=0.0)
    assert not torch.equal(plain.l_noise, terms.l_noise)


def test_fine_tuning_needs_the_init_models_prediction_type(tmp_path, tiny_base_dir, toy_emopair):
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, max_steps=1, prediction_type="v_prediction")
    exported = training.train(args)
    assert json.loads((exported / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == \
        "v_prediction"  # inference reads it from the model folder
    again = make_args(tmp_path, tiny_base_dir, toy_emopair, name="again", max_steps=1, init_model=str(exported))
    with pytest.raises(TrainingError, match="--prediction_type v_prediction"):
        training.train(again)


def test_lambda_zero_removes_l_emb_from_loss_and_gradient():
    model, sched, x = tiny_model(), sd_v1_ddim_scheduler(), loss_inputs()
    t0 = training.compute_loss(model, sched, **x, generator=torch.Generator().manual_seed(3), lambda_emb=0.0)
    assert torch.equal(t0.loss, t0.l_noise) and float(t0.l_emb.detach()) > 0
    t0.loss.backward()
    grad0 = model.emotion_encoder.fc[0].weight.grad.clone()
    model.zero_grad()
    # The same draws with lambda 0.5: the extra gradient is exactly that of 0.5 * L_emb.
    t1 = training.compute_loss(model, sched, **x, generator=torch.Generator().manual_seed(3), lambda_emb=0.5)
    (t1.loss - t1.l_noise).backward()
    grad_emb = model.emotion_encoder.fc[0].weight.grad.clone()
    model.zero_grad()
    t1b = training.compute_loss(model, sched, **x, generator=torch.Generator().manual_seed(3), lambda_emb=0.5)
    t1b.loss.backward()
    torch.testing.assert_close(model.emotion_encoder.fc[0].weight.grad, grad0 + grad_emb, rtol=1e-4, atol=1e-7)
    assert grad_emb.abs().sum() > 0


def test_cond_dropout_feeds_the_null_embedding():
    model, sched, x = tiny_model(learned_null=True), sd_v1_ddim_scheduler(), loss_inputs(batch=2)
    z = torch.randn(2, 4, 16, 16)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        eps, e = model(z, t, x["source_latent"], x["emotion"], torch.tensor([True, False]))
        cond = torch.stack([model.emotion_encoder.null_embedding, model.emotion_encoder(x["emotion"])[1]])
        ref = model.unet(torch.cat([z, x["source_latent"]], 1), t, encoder_hidden_states=cond).sample
    torch.testing.assert_close(eps, ref)
    torch.testing.assert_close(e, model.emotion_encoder(x["emotion"]))  # L_emb sees e, not the null
    # With dropout in compute_loss the learned null gets a gradient.
    terms = training.compute_loss(model, sched, **x, generator=torch.Generator().manual_seed(0), cond_dropout=0.99)
    terms.loss.backward()
    assert model.emotion_encoder.null_embedding.grad.abs().sum() > 0


def test_rank_micro_batches_partition_the_global_batch():
    perm = training.epoch_permutation(24, seed=0, epoch=1)
    assert sorted(perm.tolist()) == list(range(24))
    assert not torch.equal(perm, training.epoch_permutation(24, seed=0, epoch=2))
    parts = [training.rank_micro_batches(perm, 1, 8, world=2, rank=r, accum=2) for r in range(2)]
    flat = [i for rank in parts for mb in rank for i in mb]
    assert sorted(flat) == sorted(perm[8:16].tolist()) and all(len(mb) == 2 for rank in parts for mb in rank)


def test_loss_decreases_and_export_loads(tmp_path, tiny_base_dir, toy_emopair):
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, max_steps=36, image_every=18, checkpoint_every=12,
                     keep_last=2, cond_dropout=0.1, emotion_input="onehot")
    export = training.train(args)
    loss = scalars(args, "loss")
    assert len(loss) == 36 and all(torch.isfinite(torch.tensor(loss)))
    assert sum(loss[-6:]) / 6 < 0.8 * sum(loss[:6]) / 6, loss
    for tag in ("l_noise", "l_emb", "lr", "grad_norm", "samples_per_s"):
        assert len(scalars(args, tag)) == 36
    torch.testing.assert_close(torch.tensor(loss), torch.tensor(scalars(args, "l_noise")) +
                               0.5 * torch.tensor(scalars(args, "l_emb")), rtol=1e-5, atol=1e-6)

    # Image strips (source | edit | target) at steps 18 and 36.
    from PIL import Image
    strips = sorted((tmp_path / "run" / "logs" / "images").glob("*.png"))
    assert [p.name.split("_")[1] for p in strips] == ["iter18", "iter36"]
    assert Image.open(strips[0]).size == (3 * 64, 64)

    # Checkpoints: last 2 kept, `latest` points at the final step, args stored and weights_only-loadable.
    root = ckpt.checkpoint_root(args.save_model_dir)
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000024", "step_00000036"]
    assert (root / "latest").read_text().strip() == "step_00000036"
    weights, state = ckpt.load_checkpoint(root / "step_00000036")
    assert state["args"]["emotion_input"] == "onehot" and state["step"] == 36 and state["epoch"] == 6

    # The export is a diffusers folder whose config records the training choices, loaded as test.py does.
    from emoeditor.editing.loading import load_model
    pipe = load_model(export)
    assert pipe.config.emotion_input == "onehot" and pipe.config.cond_dropout == 0.1
    assert pipe.config.lambda_emb == 0.5 and pipe.config.vae_input_range == "minus_one_one"
    assert pipe.emotion_encoder.config.learned_null
    for sub in ("unet", "vae", "scheduler", "text_encoder", "tokenizer", "emotion_encoder"):
        assert (export / sub).is_dir()
    torch.testing.assert_close(pipe.emotion_encoder.fc[0].weight, weights["emotion_encoder.fc.0.weight"],
                               rtol=0, atol=0)
    torch.testing.assert_close(pipe.unet.conv_in.weight, weights["unet.conv_in.weight"], rtol=0, atol=0)
    summary = json.loads((export / "training_summary.json").read_text())
    assert summary["rank_weight_digests"] == [training.weights_digest(weights)]
    edit = pipe(torch.rand(1, 3, 64, 64), torch.eye(8)[:1], generator=torch.Generator().manual_seed(0),
                num_inference_steps=2).images
    assert edit.shape == (1, 3, 64, 64) and 0 <= float(edit.min()) <= float(edit.max()) <= 1


def test_lambda_zero_run_logs_loss_equal_l_noise_and_init_model(tmp_path, tiny_base_dir, toy_emopair, monkeypatch):
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, lambda_emb=0.0, max_steps=2, gradient_checkpointing=True)
    export = training.train(args)
    assert scalars(args, "loss") == scalars(args, "l_noise")
    assert min(scalars(args, "l_emb")) > 0

    # --init_model starts from that export (here with lr 0, so the weights stay exactly the export's),
    # adding a learned null embedding for cond dropout that the export did not have.
    again = make_args(tmp_path, tiny_base_dir, toy_emopair, "init", init_model=str(export), learning_rate=0.0,
                      max_steps=1, cond_dropout=0.5, encoder_hidden=[8, 8, 8])
    training.train(again)
    w0, w1 = final_weights(args), final_weights(again)
    assert set(w1) == set(w0) | {"emotion_encoder.null_embedding"}
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert not w1["emotion_encoder.null_embedding"].any()
    assert json.loads((tmp_path / "init" / "models" / "model" / "training_args.json").read_text())[
        "encoder_hidden"] == list(TINY_ENCODER_HIDDEN)  # what was trained, not the ignored flag

    # An export killed half-way leaves the previous export whole (written aside, then renamed).
    from emoeditor.editing.pipeline import EmoEditorPipeline
    weights_file = export / "unet" / "diffusion_pytorch_model.safetensors"
    before = weights_file.read_bytes()

    def killed_mid_save(self, folder, **kw):
        (folder / "unet").mkdir(parents=True)
        (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(EmoEditorPipeline, "save_pretrained", killed_mid_save)
    with pytest.raises(KeyboardInterrupt):
        training.export_pipeline(tiny_model(), args, export)
    assert weights_file.read_bytes() == before and (export / "training_summary.json").exists()
    monkeypatch.undo()

    # A folder that is not an earlier export (here the official release files) is refused before training.
    official = tmp_path / "official_release"
    official.mkdir()
    (official / "model_ip2p.pt").write_bytes(b"weights")
    with pytest.raises(training.TrainingError, match="holds other files"):
        training.train(make_args(tmp_path, tiny_base_dir, toy_emopair, "foreign", export_dir=str(official)))
    assert [p.name for p in official.iterdir()] == ["model_ip2p.pt"]


KILL_AFTER_CHECKPOINT = """
import os, signal, sys, torch
torch.set_num_threads(1)
from emoeditor.training import checkpoint
from emoeditor.cli import train as train_cli
from emoeditor.training import trainer as training
save = checkpoint.save_checkpoint

def save_then_die(root, step, *a, **kw):
    path = save(root, step, *a, **kw)
    if step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no export: a preempted job
    return path

checkpoint.save_checkpoint = save_then_die
training.train(train_cli.default_args(**__import__("json").loads(sys.argv[1])))
"""


def test_resume_is_bit_exact(tmp_path, tiny_base_dir, toy_emopair):
    import signal
    import subprocess
    import sys

    common = dict(max_steps=6, gradient_accumulation_steps=2, ema_decay=0.9, lr_scheduler="cosine",
                  lr_warmup_steps=2, cond_dropout=0.2, checkpoint_every=3, max_grad_norm=1.0)
    straight = make_args(tmp_path, tiny_base_dir, toy_emopair, "straight", **common)
    training.train(straight)

    # (a) A process killed (SIGKILL) right after its step-3 checkpoint, resumed with --resume auto.
    killed = make_args(tmp_path, tiny_base_dir, toy_emopair, "killed", **common)
    script = tmp_path / "kill_after_checkpoint.py"
    script.write_text(KILL_AFTER_CHECKPOINT)
    proc = subprocess.run([sys.executable, str(script), json.dumps(vars(killed)), "3"], capture_output=True,
                          text=True, timeout=180, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (tmp_path / "killed" / "models" / "model").exists()
    training.train(make_args(tmp_path, tiny_base_dir, toy_emopair, "killed", resume="auto", **common))

    # (b) The same with --stop_at_step (a job with a time limit), resumed with --resume latest.
    stopped = make_args(tmp_path, tiny_base_dir, toy_emopair, "stopped", stop_at_step=3, **common)
    assert training.train(stopped) is None
    assert not (tmp_path / "stopped" / "models" / "model").exists()
    # No global RNG state is saved (every draw comes from a per-step generator); an older checkpoint's
    # "rng" entry is ignored on resume, whatever it holds.
    state_file = ckpt.list_checkpoints(ckpt.checkpoint_root(stopped.save_model_dir))[-1] / ckpt.STATE_FILE
    old_style = torch.load(state_file, weights_only=True)
    assert "rng" not in old_style
    torch.save({**old_style, "rng": {"torch": torch.zeros(3, dtype=torch.uint8)}}, state_file)
    resumed = make_args(tmp_path, tiny_base_dir, toy_emopair, "stopped", resume="latest", **common)
    training.train(resumed)

    a = final_weights(straight)
    _, sa = ckpt.load_checkpoint(ckpt.list_checkpoints(ckpt.checkpoint_root(straight.save_model_dir))[-1])
    for run in (killed, resumed):
        b = final_weights(run)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        _, sb = ckpt.load_checkpoint(ckpt.list_checkpoints(ckpt.checkpoint_root(run.save_model_dir))[-1])
        assert all(torch.equal(x, y) for x, y in zip(sa["ema"]["shadow_params"], sb["ema"]["shadow_params"]))
        assert sa["lr_scheduler"] == sb["lr_scheduler"] and sb["step"] == 6
    # Exported EMA weights differ from the raw ones.
    from emoeditor.editing.pipeline import EmoEditorPipeline
    pipe = EmoEditorPipeline.from_pretrained(tmp_path / "stopped" / "models" / "model")
    assert not torch.equal(pipe.unet.conv_in.weight, a["unet.conv_in.weight"])

    # Resuming with a different model setting is refused with a clear message.
    wrong = make_args(tmp_path, tiny_base_dir, toy_emopair, "stopped", resume="latest", emotion_input="onehot")
    with pytest.raises(training.TrainingError, match="emotion_input"):
        training.train(wrong)
    other_seed = make_args(tmp_path, tiny_base_dir, toy_emopair, "stopped", resume="latest", random_seed=1, **common)
    with pytest.raises(training.TrainingError, match="random_seed 0, now 1"):
        training.train(other_seed)


def test_same_seed_same_weights_other_seed_differs(tmp_path, tiny_base_dir, toy_emopair):
    runs = [make_args(tmp_path, tiny_base_dir, toy_emopair, f"s{i}", random_seed=seed)
            for i, seed in enumerate((5, 5, 6))]
    for args in runs:
        training.train(args)
    w = [final_weights(a) for a in runs]
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    assert not torch.equal(w[0]["unet.conv_in.weight"], w[2]["unet.conv_in.weight"])


def test_cached_and_uncached_training_give_the_same_loss(tmp_path, tiny_base_dir, toy_emopair):
    plain = make_args(tmp_path, tiny_base_dir, toy_emopair, "plain", max_steps=3)
    cached = make_args(tmp_path, tiny_base_dir, toy_emopair, "cached", max_steps=3,
                       latent_cache=str(tmp_path / "cache"), cache_shard_size=10, cache_batch_size=3,
                       image_every=3)
    training.train(plain)
    training.train(cached)
    assert (tmp_path / "cache" / "shard_00002.safetensors").exists()
    assert len(list((tmp_path / "cached" / "logs" / "images").glob("*.png"))) == 1  # strip from latents
    for tag in ("loss", "l_noise", "l_emb"):
        torch.testing.assert_close(torch.tensor(scalars(cached, tag)), torch.tensor(scalars(plain, tag)),
                                   rtol=1e-5, atol=1e-6)
    # (Weights are not compared elementwise: Adam's first steps move near-zero-gradient weights by
    # +-lr whatever the gradient's size, so 1e-9 float noise flips them; steps 2-3's losses above
    # already depend on the updated weights.)


def test_nonfinite_losses_skip_steps_then_stop(tmp_path, tiny_base_dir, toy_emopair, monkeypatch):
    real = training.compute_loss
    calls = {"n": 0}

    def nan_on_first(*a, **kw):
        calls["n"] += 1
        terms = real(*a, **kw)
        return terms._replace(loss=terms.loss * float("nan")) if calls["n"] == 1 else terms

    monkeypatch.setattr(training, "compute_loss", nan_on_first)
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, "one_nan", max_steps=3)
    export = training.train(args)
    summary = json.loads((export / "training_summary.json").read_text())
    assert summary["nonfinite_total"] == 1 and summary["steps"] == 3
    assert all(torch.isfinite(v).all() for v in final_weights(args).values())

    monkeypatch.setattr(training, "compute_loss", lambda *a, **kw: real(*a, **kw)._replace(
        loss=torch.tensor(float("inf"), requires_grad=True)))
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, "all_nan", max_steps=10, max_nonfinite=3)
    with pytest.raises(training.TrainingError, match="3 non-finite losses in a row"):
        training.train(args)


def test_batch_size_must_split_over_processes_and_accumulation(tmp_path, tiny_base_dir, toy_emopair):
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, batch_size=6, gradient_accumulation_steps=4)
    with pytest.raises(training.TrainingError, match="multiple of processes"):
        training.train(args)


@pytest.mark.parametrize("flag, value", [("gradient_accumulation_steps", 0), ("image_size", 0), ("max_nonfinite", 0),
                                         ("ema_decay", 1.0), ("cond_dropout", 1.0), ("lambda_emb", -0.5)])
def test_out_of_range_settings_are_named_before_any_work(tmp_path, tiny_base_dir, toy_emopair, flag, value):
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, **{flag: value})
    with pytest.raises(training.TrainingError, match=f"--{flag} {value}"):
        training.train(args)


def test_train_cli_uses_yaml_preset_as_defaults(tmp_path, tiny_base_dir, toy_emopair):
    from emoeditor.config import parse_args

    train_script = load_script("train.py")

    root, json_path = toy_emopair
    preset = tmp_path / "p.yaml"
    preset.write_text(f"base_model: {tiny_base_dir}\njson_path: {json_path}\nbatch_size: 8\nlambda_emb: 0.25\n")
    args = parse_args(train_cli.build_parser(), ["--config", str(preset), "--batch_size", "4"])
    assert args.batch_size == 4 and args.lambda_emb == 0.25 and args.json_path == str(json_path)
    with pytest.raises(SystemExit):  # a typo is an argparse error, not a ValueError from inside diffusers
        parse_args(train_cli.build_parser(), ["--lr_scheduler", "cosin"])
    for name in ("paper", "tiny"):  # presets only name real flags
        parse_args(train_cli.build_parser(), ["--config", str(REPO / "configs" / f"{name}.yaml")])
    assert callable(train_script.main)


def test_checkpoint_save_is_atomic_and_pruned(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    w = {"a": torch.arange(4.0)}
    state = {"step": 1, "nested": {"t": torch.ones(2), "xs": [1, 2.5, None, True]}}
    ckpt.save_checkpoint(root, 1, w, state, {"path": tmp_path, "n": 3}, keep_last=2)

    def crash(*a, **kw):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(root, 2, {"a": torch.zeros(4)}, state, {}, keep_last=2)
    monkeypatch.undo()
    # The half-written step 2 is invisible: `latest` still resolves to the complete step 1.
    latest = ckpt.resolve_checkpoint("latest", tmp_path)
    assert latest.name == "step_00000001" and [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000001"]
    weights, loaded = ckpt.load_checkpoint(latest)  # weights_only=True read of tensors + primitives
    assert torch.equal(weights["a"], w["a"]) and loaded["nested"]["xs"] == [1, 2.5, None, True]
    assert loaded["args"] == {"path": str(tmp_path), "n": 3}
    for step in (2, 3, 4):
        ckpt.save_checkpoint(root, step, w, state, {}, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000003", "step_00000004"]
    assert not list(root.glob(".*.tmp"))
    assert ckpt.resolve_checkpoint(str(tmp_path), tmp_path).name == "step_00000004"
    with pytest.raises(ckpt.MissingWeightsError):
        ckpt.resolve_checkpoint(str(tmp_path / "nowhere"), tmp_path)


def test_skip_bad_replaces_a_pair_that_fails_mid_run(tmp_path, toy_emopair):
    from emoeditor.data.emopair import EmoPairDataset, load_emopair

    root, json_path = toy_emopair
    entries = load_emopair(json_path, root)
    broken = dict(entries[3], img_tgt_path="missing/target.jpg")  # fails only when read
    data = EmoPairDataset(entries[:3] + [broken] + entries[4:6], root, 64)
    wrapped = training.SkipBadItems(data)
    assert wrapped[3]["index"] == 4 and torch.equal(wrapped[3]["target"], data[4]["target"])
    assert wrapped[3]["skipped"] == 1 and wrapped[0]["index"] == 0 and wrapped[0]["skipped"] == 0


def test_skip_bad_run_counts_the_pairs_it_replaced(tmp_path, tiny_base_dir, toy_emopair, monkeypatch):
    from emoeditor.data.emopair import EmoPairDataset
    from emoeditor.errors import ImageLoadError

    real = EmoPairDataset.__getitem__

    def broken_at_5(self, i):  # pair 5 becomes unreadable after validation
        if i == 5:
            raise ImageLoadError("EmoPair entry 5: truncated")
        return real(self, i)

    monkeypatch.setattr(EmoPairDataset, "__getitem__", broken_at_5)
    # One epoch (24 toy pairs, batch 4) draws pair 5 exactly once.
    args = make_args(tmp_path, tiny_base_dir, toy_emopair, skip_bad=True, max_steps=6, checkpoint_every=3)
    export = training.train(args)
    assert json.loads((export / "training_summary.json").read_text())["bad_pairs_skipped"] == 1
    assert scalars(args, "bad_pairs_skipped")[-1] == 1
    _, state = ckpt.load_checkpoint(ckpt.list_checkpoints(ckpt.checkpoint_root(args.save_model_dir))[-1])
    assert state["bad_pairs_skipped"] == 1


def test_training_reads_emopair_with_the_shared_flags(tmp_path, toy_emopair):
    """--check_images (data.add_emopair_args) reaches the training data: 'none' lets a missing image
    through to be skipped mid-run, the default header check reports it up front."""
    from types import SimpleNamespace

    from emoeditor.data.emopair import read_annotations
    from emoeditor.errors import AnnotationError

    root, json_path = toy_emopair
    entries = read_annotations(json_path)
    entries[2]["img_tgt_path"] = "missing/target.jpg"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps(entries))
    main = SimpleNamespace(is_main_process=True)
    args = train_cli.default_args(json_path=str(bad_json), data_root=str(root), image_size=64, no_progress=True)
    with pytest.raises(AnnotationError, match="entry 2 .*missing/target.jpg"):
        training.build_dataset(args, main, frozen={})
    args = train_cli.default_args(json_path=str(bad_json), data_root=str(root), image_size=64, no_progress=True,
                                 check_images="none", skip_bad=True)
    data = training.build_dataset(args, main, frozen={})
    assert len(data) == len(entries) and data[2]["index"] == 3 and data[2]["skipped"] == 1


def test_8bit_adam_trains_and_resumes_exactly(tmp_path, tiny_base_dir, toy_emopair):
    """--use_8bit_adam (bitsandbytes, whose 8-bit Adam also runs on CPU): weights move, resume is exact."""
    pytest.importorskip("bitsandbytes")
    straight = make_args(tmp_path, tiny_base_dir, toy_emopair, "straight", use_8bit_adam=True, max_steps=4,
                         checkpoint_every=2)
    training.train(straight)
    first = make_args(tmp_path, tiny_base_dir, toy_emopair, "resumed", use_8bit_adam=True, max_steps=4,
                      checkpoint_every=2, stop_at_step=2)
    training.train(first)
    training.train(make_args(tmp_path, tiny_base_dir, toy_emopair, "resumed", use_8bit_adam=True, max_steps=4,
                             checkpoint_every=2, resume="latest"))
    state = torch.load(ckpt.list_checkpoints(ckpt.checkpoint_root(straight.save_model_dir))[-1] / ckpt.STATE_FILE,
                       weights_only=True)
    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            for value in obj.values():
                yield from tensors(value)

    # the 8-bit optimizer's quantised moments are what was checkpointed (and load with weights_only)
    assert any(t.dtype == torch.uint8 for t in tensors(state["optimizer"]["state"]))
    a, b = final_weights(straight), final_weights(first)
    init = load_file(str(tiny_base_dir / "unet" / "diffusion_pytorch_model.safetensors"))
    assert not torch.equal(a["unet.conv_in.weight"], init["conv_in.weight"])
    assert all(torch.equal(a[k], b[k]) for k in a)
