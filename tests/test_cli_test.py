"""test.py end to end on tiny random-weight components: files written, determinism, targets, sharding."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emoeditor.cli import edit as test_cli  # test.py's entry point lives there
from emoeditor.cli.edit import job_seed, shard
from emoeditor.constants import EMOTIONS
from emoeditor.editing.critic import replay
from emoeditor.emotions import parse_target
from emoeditor.errors import InvalidTargetError

REPO = Path(__file__).resolve().parent.parent


def argv(assets, out, *extra):
    return ["--config", str(REPO / "configs" / "infer_tiny.yaml"), "--model_dir", str(assets / "model"),
            "--predictor_path", str(assets / "predictor"), "--input_path", str(assets / "imgs"),
            "--test_save_dir", str(out), "--num_inference_steps", "2", "--num_loop", "2", "--quiet", *extra]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_run_writes_image_trace_strip_and_csv_deterministically(assets, tmp_path):
    summary = test_cli.main(argv(assets, tmp_path / "a"))
    out = tmp_path / "a"
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["75863_awe_astronaut.png", "75863_awe_coffee.png"]  # official naming
    rows = read_csv(out / "summary.csv")
    assert [r["input"] for r in rows] == sorted(str(p) for p in (assets / "imgs").iterdir())
    assert summary["done"] == 2 and not summary["skipped"]
    for row in rows:
        trace = json.loads((out / "traces" / (Path(row["output"]).stem + ".json")).read_text())
        its = trace["iterations"]
        assert 1 <= len(its) <= 2 == trace["thresholds"]["num_loop"]
        assert int(row["iterations"]) == len(its)
        for it in its:
            assert len(it["probs"]) == 8 and abs(sum(it["probs"]) - 1) < 1e-5
            assert -1 <= it["ssim"] <= 1 and 700 <= it["start_timestep"] <= 980
            assert it["target_confidence"] == pytest.approx(it["probs"][EMOTIONS.index("awe")])
        assert trace["returned"] == replay(trace, 2).returned and trace["reason"]
        img = Image.open(row["output"])
        assert img.size == (64, 64) and img.mode == "RGB"
        strip = np.asarray(Image.open(out / "strips" / (Path(row["output"]).stem + ".png")))
        plot = 400  # the valence-arousal path below the tiles: 4 x 4 inches at 100 dpi
        assert strip.shape[1] == max(64 * (len(its) + 2), plot) and strip.shape[0] > 64 + plot
        band = strip[64:-plot]  # tiles, then a band of labels, then the plot
        for k in range(len(its) + 2):  # every tile is labelled underneath
            assert (band[:, 64 * k: 64 * (k + 1)] < 128).any()
        assert (strip[-plot:, :plot] < 128).mean() > 0.01  # axes, points and text drawn
    test_cli.main(argv(assets, tmp_path / "b"))
    for name in names:  # same seed -> identical bytes
        assert (out / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    test_cli.main(argv(assets, tmp_path / "c", "--random_seed", "1"))
    assert (tmp_path / "c" / "1_awe_coffee.png").read_bytes() != (out / names[1]).read_bytes()


def test_target_all_is_the_seven_others_of_the_source_class(assets, tmp_path):
    path = assets / "imgs" / "coffee.png"
    summary = test_cli.main(argv(assets, tmp_path, "--input_path", str(path), "--target_emo", "all",
                                 "--seed_mode", "hashed", "--critic", "none", "--batch_size", "4"))
    rows = read_csv(tmp_path / "summary.csv")
    trace = json.loads(next((tmp_path / "traces").glob("*.json")).read_text())
    top = EMOTIONS[max(range(8), key=lambda i: trace["source_probs"][i])]
    assert sorted(r["target"] for r in rows) == sorted(e for e in EMOTIONS if e != top)
    assert summary["done"] == 7
    seeds = {r["target"]: int(r["seed"]) for r in rows}
    assert len(set(seeds.values())) == 7  # hashed per (file, target)
    assert all(seeds[t] == job_seed(75863, "coffee.png", t, "hashed") for t in seeds)
    assert all(len(json.loads(p.read_text())["iterations"]) == 1 for p in (tmp_path / "traces").glob("*.json"))


def test_mixture_target_label_and_confidence(assets, tmp_path):
    path = assets / "imgs" / "coffee.png"
    test_cli.main(argv(assets, tmp_path, "--input_path", str(path), "--target_emo", "awe:1,excitement:1"))
    (trace_file,) = (tmp_path / "traces").glob("*.json")
    assert trace_file.name == "75863_awe50-excitement50_coffee.json"
    trace = json.loads(trace_file.read_text())
    for it in trace["iterations"]:
        assert it["target_confidence"] == pytest.approx(it["probs"][2] + it["probs"][5])


class FakeProcess:
    """What accelerate's PartialState gives run_inference, for process `rank` of `world` on one CPU."""

    def __init__(self, rank, world):
        self.process_index, self.num_processes = rank, world
        self.is_main_process = rank == 0
        self.device = torch.device("cpu")

    def wait_for_everyone(self):
        pass


def test_sharded_run_equals_single_process(assets, tmp_path):
    from emoeditor.cli.edit import run_inference
    from emoeditor.config import parse_args

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, p in enumerate(sorted((assets / "imgs").iterdir()) * 2):
        Image.open(p).rotate(90 * i).save(imgs / f"{i}_{p.name}")

    def common(out):
        return argv(assets, out, "--input_path", str(imgs), "--batch_size", "2")

    single = run_inference(parse_args(test_cli.build_parser(), common(tmp_path / "one")))
    for rank in (1, 0):  # rank 0 merges, after everyone is done
        run_inference(parse_args(test_cli.build_parser(), common(tmp_path / "two")), process=FakeProcess(rank, 2))
    assert single["done"] == 4
    one, two = tmp_path / "one", tmp_path / "two"
    assert ((one / "summary.csv").read_text().replace(str(one), "X")
            == (two / "summary.csv").read_text().replace(str(two), "X"))
    for p in one.glob("*.png"):
        assert p.read_bytes() == (two / p.name).read_bytes()
    assert not list(two.glob("summary.rank*.csv"))
    assert shard(list(range(7)), 1, 3) == [1, 4] and sorted(shard(range(7), 0, 3) + shard(range(7), 1, 3)
                                                            + shard(range(7), 2, 3)) == list(range(7))


def test_bad_targets_fail_before_loading_with_a_clear_message(tmp_path):
    for bad, match in (("joy", "unknown emotion 'joy'"), ("awe:nan", "finite"), ("awe:0.5,fear:x", "not a number"),
                       ("awe:3e38,fear:3e38", "float32"), ("awe:1,awe:-0.5", "twice")):
        with pytest.raises(InvalidTargetError, match=match):
            test_cli.main(["--target_emo", bad, "--model_dir", str(tmp_path / "nope")])


def test_two_process_command_line_run_equals_single_process(assets, tmp_path):
    """`python -m torch.distributed.run --nproc_per_node 2 test.py ...` (what accelerate launch does)."""
    common = argv(assets, tmp_path / "two", "--critic", "official", "--num_loop", "1", "--device", "cpu")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(29500 + os.getpid() % 1000), "test.py", *common],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "[process 0/2] 1 edits" in two.stdout and "[process 1/2] 1 edits" in two.stdout
    test_cli.main(argv(assets, tmp_path / "one", "--critic", "official", "--num_loop", "1", "--device", "cpu"))
    one = tmp_path / "one"
    rows = read_csv(tmp_path / "two" / "summary.csv")
    assert len(rows) == 2 and not list((tmp_path / "two").glob("summary.rank*"))
    merged = (tmp_path / "two" / "summary.csv").read_text().replace(str(tmp_path / "two"), str(one))
    assert (one / "summary.csv").read_text() == merged
    for p in one.glob("*.png"):
        assert p.read_bytes() == (tmp_path / "two" / p.name).read_bytes()


@pytest.mark.parametrize("args, message", [
    (["--target_emo", "joy"], "unknown emotion 'joy'"),
    (["--no-tiny", "--model_dir", "{tmp}/none"], "model_ip2p.pt"),
    (["--no-tiny", "--predictor_path", "{tmp}/none.pt"], "emo_predictor"),
    (["--input_path", "{tmp}/nothing*.png"], "no such file"),
])
def test_user_errors_exit_2_with_one_line(assets, tmp_path, capsys, args, message):
    from emoeditor.config import run_cli

    args = [a.format(tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: test_cli.main(argv(assets, tmp_path / "out", *args)))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err
    assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err


def test_editor_interface(assets):
    from emoeditor.editing.critic import CriticConfig
    from emoeditor.editing.loop import CriticLoop
    from emoeditor.editors.emoeditor import EmoEditorEditor

    one_edit = EmoEditorEditor.from_pretrained(assets / "model", assets / "predictor", num_inference_steps=2)
    editor = CriticLoop(one_edit, one_edit.predictor.probs, CriticConfig(num_loop=2), batch_size=2,
                        return_candidates=True)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 64, 64, generator=g)
    targets = torch.stack([parse_target("awe"), parse_target("fear"), parse_target("awe:1,excitement:1")])

    def gens():
        return [torch.Generator().manual_seed(s) for s in (1, 2, 3)]

    a = editor(images, targets, gens())
    b = editor(images, targets, gens())
    assert a.images.shape == images.shape and torch.equal(a.images, b.images)
    for img, trace, candidates in zip(a.images, a.traces, a.candidates):
        assert len(candidates) == len(trace["iterations"]) <= 2
        ret = trace["returned"]
        assert torch.equal(img, candidates[ret])
    # the single edit is the loop's first iteration (same generator, same direction target - P(source))
    single = one_edit(images, targets, gens())
    first = CriticLoop(one_edit, one_edit.predictor.probs, CriticConfig("none"), batch_size=2)(images, targets, gens())
    torch.testing.assert_close(single.images, first.images, rtol=0, atol=1e-5)


def test_random_seed_none_draws_one_and_names_files_with_it(assets, tmp_path, capsys):
    from emoeditor.cli.edit import run_inference
    from emoeditor.config import parse_args
    from emoeditor.errors import EmoEditorError

    path = str(assets / "imgs" / "coffee.png")
    summary = test_cli.main(argv(assets, tmp_path / "a", "--random_seed", "none", "--input_path", path,
                                 "--critic", "none"))
    seed = int(summary["rows"][0]["seed"])
    assert f"random_seed: {seed}" in capsys.readouterr().out
    assert Path(summary["rows"][0]["output"]).name == f"{seed}_awe_coffee.png"
    args = parse_args(test_cli.build_parser(), argv(assets, tmp_path / "b", "--random_seed", "none"))
    with pytest.raises(EmoEditorError, match="explicit --random_seed"):
        run_inference(args, process=FakeProcess(0, 2))
