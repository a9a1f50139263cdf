"""Predictor training on the toy EmoSet: it learns, skips bad files, resumes, and saves official-layout weights."""

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from emoeditor.cli.train_predictor import build_parser
from emoeditor.constants import EMOTIONS
from emoeditor.data.emoset import load_split
from emoeditor.data.toy_emoset import write_toy_emoset
from emoeditor.errors import EmoEditorError, MissingWeightsError
from emoeditor.models.predictor import load_predictor
from emoeditor.training.predictor import (
    EmotionImageDataset,
    build_predictor,
    lr_multiplier,
    make_optimizer,
    save_training_state,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import train_predictor  # noqa: E402  (the CLI entry point)

SMALL_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@pytest.fixture(scope="module")
def toy_release(tmp_path_factory):
    return write_toy_emoset(tmp_path_factory.mktemp("toy_emoset"), "release", per_class=(8, 3, 2),
                            num_corrupt=2, photos=SMALL_PHOTOS)


@pytest.fixture(scope="module")
def trained(toy_release, tmp_path_factory):
    """One CPU run through the CLI with the tiny preset, as a user would start it."""
    out = tmp_path_factory.mktemp("predictor_run")
    summary = train_predictor.main(["--config", str(ROOT / "configs/predictor_tiny.yaml"),
                                    "--data_root", str(toy_release), "--output_dir", str(out), "--epochs", "4"])
    return out, summary


def test_toy_emoset_layouts_load_by_emotion_name(toy_release, tmp_path):
    train = load_split(toy_release, "train")
    assert len(train) == 8 * 8 + 2
    # EmoSet's own label order (amusement, awe, contentment, ...) must not leak: labels follow the names.
    assert all(EMOTIONS[s.label] == s.path.parent.name for s in train)
    assert [len(load_split(toy_release, s)) for s in ("val", "test")] == [24, 16]

    folders = write_toy_emoset(tmp_path / "folders", "folders", per_class=(2, 1, 0), photos=SMALL_PHOTOS)
    assert len(load_split(folders, "train")) == 16 and len(load_split(folders, "test")) == 0
    assert all(EMOTIONS[s.label] == s.path.parent.name for s in load_split(folders, "val"))

    # Flat class folders: a seeded, disjoint split that covers everything.
    flat = folders / "train"
    parts = {s: load_split(flat, s, val_fraction=0.25, test_fraction=0.25, seed=3) for s in ("train", "val", "test")}
    assert [len(v) for v in parts.values()] == [8, 4, 4]
    assert len({p.path for v in parts.values() for p in v}) == 16
    assert parts["val"] == load_split(flat, "val", val_fraction=0.25, test_fraction=0.25, seed=3)

    with pytest.raises(EmoEditorError, match="neither an EmoSet release"):
        load_split(tmp_path, "train")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.json").write_text(json.dumps([["joy", "image/x.jpg", "annotation/x.json"]]))
    with pytest.raises(EmoEditorError, match="unknown emotion 'joy'"):
        load_split(tmp_path / "bad", "train")


def test_augmentation_is_seeded_per_epoch(toy_release):
    ds = EmotionImageDataset(load_split(toy_release, "train")[:4], 64, "crop_flip", seed=0)
    a = ds[1][0]
    assert torch.equal(a, ds[1][0])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[1][0])
    bad = EmotionImageDataset(load_split(toy_release, "train")[-2:], 64)
    img, label, index = bad[0]
    assert label == -1 and index == 0 and img.shape == (3, 64, 64)


def test_training_loss_falls_and_top1_rises(trained):
    out, summary = trained
    history = summary["history"]
    assert len(history) == 4
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    best_val = max(h["val_top1"] for h in history)
    assert best_val >= summary["initial"]["top1"] + 0.4  # chance is 1/8; the toy is easy
    assert summary["results"]["val"]["top1"] == pytest.approx(best_val)  # the kept weights are the best
    test = json.loads((out / "eval_test.json").read_text())
    assert set(test["per_class"]) == set(EMOTIONS) and test["num_images"] == 16
    assert sum(map(sum, test["confusion"])) == 16
    assert (out / "confusion_val.png").stat().st_size > 0 and (out / "confusion_test.png").stat().st_size > 0


def test_corrupt_images_are_counted_and_skipped(trained):
    out, summary = trained
    assert summary["skipped"] == 2
    listed = (out / "skipped_images.txt").read_text().splitlines()
    assert len(listed) == 2 and all(line.startswith("train\t") for line in listed)


def test_saved_predictor_loads_into_plain_torchvision(trained):
    out, _ = trained
    state = torch.load(out / "emo_predictor.pt", map_location="cpu", weights_only=True)
    net = resnet18(weights=None)
    net.fc = nn.Linear(512, 8)
    net.load_state_dict(state)  # strict: the official key layout
    net.eval()
    config = json.loads((out / "config.json").read_text())
    assert config["mean"] is None and config["std"] is None and config["image_size"] == 64
    assert config["emotions"] == list(EMOTIONS)
    predictor = load_predictor(out)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(net(x), predictor(x), atol=1e-5)
    # the safetensors copy holds the same weights
    assert all(torch.equal(state[k], v) for k, v in predictor.net.state_dict().items())


def test_resume_continues_where_it_stopped(toy_release, tmp_path):
    args = ["--config", str(ROOT / "configs/predictor_tiny.yaml"), "--data_root", str(toy_release),
            "--output_dir", str(tmp_path), "--augment", "none"]
    train_predictor.main(args + ["--epochs", "1", "--tensorboard"])
    first = torch.load(tmp_path / "training_state.pt", weights_only=True)
    assert first["epoch"] == 1
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    train_predictor.main(args + ["--epochs", "2", "--resume"])
    second = torch.load(tmp_path / "training_state.pt", weights_only=True)
    assert second["epoch"] == 2 and second["step"] == 2 * first["step"]
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    assert not list(tmp_path.glob(".*.tmp*"))  # every atomic write was renamed into place
    with pytest.raises(SystemExit):  # run_cli turns a missing state into a clear error
        train_predictor.run_cli(lambda: train_predictor.main(args + ["--resume", "--output_dir", str(tmp_path / "x")]))


def test_training_state_is_written_atomically(tmp_path, monkeypatch):
    path = save_training_state(tmp_path / "training_state.pt", {"epoch": 1, "w": torch.ones(3)})

    def killed(obj, f, *args, **kwargs):  # dies half-way through writing
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_training_state(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)  # the previous epoch's state, intact
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(3))


def test_imagenet_init_from_a_local_file_only(tmp_path, monkeypatch):
    reference = resnet18(weights=None)  # stands in for the ImageNet file: 1000-way fc
    torch.save(reference.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    predictor = build_predictor(64, init="imagenet", imagenet_weights=tmp_path / "resnet18-f37072fd.pth")
    assert torch.equal(predictor.net.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert predictor.net.fc.out_features == 8
    with pytest.raises(MissingWeightsError, match="--imagenet_weights"):
        build_predictor(64, init="imagenet", imagenet_weights=tmp_path / "missing.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    with pytest.warns(UserWarning, match="random weights"):
        build_predictor(64, init="imagenet")
    imagenet = build_predictor(64, normalize="imagenet", init="random")
    assert imagenet.config["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_lr_schedule_and_optimizers():
    cosine = lr_multiplier(warmup=4, total=14, schedule="cosine")
    assert [cosine(s) for s in (0, 3)] == [0.25, 1.0]
    assert cosine(9) == pytest.approx(0.5) and cosine(14) == pytest.approx(0.0)
    assert lr_multiplier(4, 14, "constant")(10) == 1.0
    params = [nn.Parameter(torch.zeros(2))]
    for name, cls in (("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)):
        args = build_parser().parse_args(["--optimizer", name, "--learning_rate", "0.1"])
        opt = make_optimizer(params, args)
        assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.1


def test_bad_predictor_files_get_a_clear_error(tmp_path):
    """A wrong, pickled, truncated or mislabelled predictor names the file instead of a torch traceback."""
    pickled = tmp_path / "pickled.pt"
    torch.save({"net": nn.Linear(2, 2)}, pickled)  # a module object: only loadable by unpickling
    truncated = tmp_path / "truncated.pt"
    torch.save(resnet18(weights=None).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    wrong = tmp_path / "wrong.pt"
    torch.save(nn.Linear(2, 2).state_dict(), wrong)
    for path in (pickled, truncated, wrong):
        with pytest.raises(EmoEditorError, match=path.name):
            load_predictor(path)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(EmoEditorError, match="model.safetensors"):
        load_predictor(folder)
    (folder / "config.json").write_text("{image_size: 64")
    with pytest.raises(EmoEditorError, match="config.json"):
        load_predictor(folder)
