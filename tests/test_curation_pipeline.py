"""EmoPair curation end to end on CPU: tiny P, tiny Ip2p, toy Ip2p folders / parquet / EmoSet made here.

EPAS and EPGS shards merge into an annotation file train.py trains on; shards run apart merge to what
one run gives; a run killed mid-shard and rerun gives the uninterrupted JSON; corrupt inputs are named.
"""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from tiny_training import tiny_train_args

from emoeditor.cli import curate
from emoeditor.constants import EMOTIONS
from emoeditor.curation import epas
from emoeditor.curation.epgs import BankEditor
from emoeditor.curation.filters import EpgsThresholds, rejected_by
from emoeditor.curation.perceptual import load_lpips, lpips_distance
from emoeditor.curation.run import to_batch
from emoeditor.imageio import open_image, resize_square, to_uint8
from emoeditor.models.tiny import tiny_predictor
from emoeditor.scoring.ssim import ssim_reference
from emoeditor.training import trainer as training

TINY = ["--tiny", "--image_size", "64", "--quiet"]
EPAS_FLAGS = [*TINY, "--keep_rule", "all", "--batch_size", "4"]
# tiny P is random: permissive filters, so candidates survive to be trained on (the filters are tested with
# scripted scores in test_curation_units.py)
EPGS_FILTERS = ["--confidence", "0", "--ssim_low", "-1", "--ssim_high", "1", "--lpips_min", "-1"]
EPGS_FLAGS = [*TINY, "--num_inference_steps", "2", "--batch_size", "8", *EPGS_FILTERS]


def cli(*argv):
    return curate.main([str(a) for a in argv])


def photo_crops(count, size=72, seed=0):
    rng = np.random.default_rng(seed)
    photo = skdata.astronaut()
    crops = []
    for _ in range(count):
        top, left = rng.integers(0, 512 - 200, size=2)
        crop = Image.fromarray(photo[top:top + 200, left:left + 200]).resize((size, size))
        crops.append(crop)
    return crops


def jpeg(img):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy Ip2p per-seed folders (one truncated image, one broken prompt.json), a toy parquet, a toy EmoSet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("curation_toy")
    crops = iter(photo_crops(40))
    for f in range(4):
        folder = root / "ip2p" / f"{f:07d}"
        folder.mkdir(parents=True)
        (folder / "prompt.json").write_text("{broken" if f == 3 else json.dumps({"edit": f"make it scene {f}"}))
        for seed in (101, 202):
            for k in (0, 1):
                (folder / f"{seed}_{k}.jpg").write_bytes(jpeg(next(crops)))
    target = root / "ip2p" / "0000001" / "202_1.jpg"
    target.write_bytes(target.read_bytes()[:300])  # cut short
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    rows = [(jpeg(next(crops)), jpeg(next(crops))) for _ in range(6)]
    rows[2] = (b"\x89PNG broken", rows[2][1])
    table = pa.table({"original_image": pa.array([{"bytes": a, "path": None} for a, _ in rows], type=image),
                      "edit_prompt": [f"turn it into picture {i}" for i in range(6)],
                      "edited_image": pa.array([{"bytes": b, "path": None} for _, b in rows], type=image)})
    pq.write_table(table, root / "train-00000.parquet", row_group_size=2)
    for emotion, img in zip(("awe", "fear", "sadness"), crops):  # EmoSet's class-folder layout
        (root / "emoset" / emotion).mkdir(parents=True)
        img.save(root / "emoset" / emotion / f"{emotion}_1.jpg")
    return root


@pytest.fixture(scope="module")
def curated(toy, tmp_path_factory):
    """EPAS on the folders (3 shards), EPGS run as two separate shard jobs, merged."""
    out = tmp_path_factory.mktemp("curated")
    cli("epas", "--ip2p_folders", toy / "ip2p", "--num_shards", 3, "--work_dir", out / "epas", "--data_root",
        out / "EmoPair", *EPAS_FLAGS)
    for shard in (0, 1):
        cli("epgs", "--emoset", toy / "emoset", "--num_shards", 2, "--shard_id", shard, "--work_dir", out / "epgs",
            "--data_root", out / "EmoPair", *EPGS_FLAGS)
    report = merge(out, out / "epas", out / "epgs")
    return out, report


def merge(out, *work_dirs, name="data_EmoPair.json"):
    return cli("merge", "--work_dir", *work_dirs, "--data_root", out / "EmoPair", "--out_json", out / name,
               "--keep_rule", "all", "--tiny", "--quiet", *EPGS_FILTERS)


def test_epas_and_epgs_give_emopair_that_train_py_trains_on(curated, tiny_base_dir, tmp_path):
    out, report = curated
    entries = json.loads((out / "data_EmoPair.json").read_text())
    # 4 folders x 2 seeds: one pair cut short, two behind a broken prompt.json; 3 EmoSet images x 7 targets
    assert report["epas"]["candidates"] == 5 and report["epgs"]["candidates"] == 21
    assert len(entries) == report["entries"] == 26
    assert sum("EPGS" in e["img_src_path"] for e in entries) == 21
    for e in entries:
        assert Image.open(out / "EmoPair" / e["img_src_path"]).size == (64, 64)
        assert abs(sum(e["source_softmax"]) - 1) < 1e-4
    epgs = [e for e in entries if "EPGS" in e["img_src_path"]]
    assert all(e["class_target"] != e["class_source"] for e in epgs)
    assert {e["prompt"] for e in epgs} <= {t for ts in json.loads(
        (curate.DEFAULT_BANK).read_text())["instructions"].values() for t in ts}
    stats = json.loads((out / "data_EmoPair_stats.json").read_text())
    assert sum(stats["per_transition"].values()) == 26 and (out / "data_EmoPair_hist.png").stat().st_size > 1000
    provenance = json.loads((out / "data_EmoPair_provenance.json").read_text())
    assert set(provenance["stages"]) == {"epas", "epgs"} and provenance["stages"]["epgs"]["digests"]["bank"]

    args = tiny_train_args(tmp_path, tiny_base_dir, out / "EmoPair", out / "data_EmoPair.json", max_steps=2,
                           preview_steps=2)
    summary = json.loads((training.train(args) / "training_summary.json").read_text())
    assert summary["training_pairs"] == 26 and summary["invalid_entries_dropped"] == 0


def test_corrupt_inputs_are_counted_and_named(curated, toy):
    out, report = curated
    corrupt = {c["id"]: c["problem"] for c in report["epas"]["corrupt_named"]}
    assert report["epas"]["corrupt_inputs"] == 3 and set(corrupt) == {"0000001/202", "0000003/101", "0000003/202"}
    assert str(toy / "ip2p" / "0000001" / "202_1.jpg") in corrupt["0000001/202"]
    assert "prompt.json: unreadable prompt file" in corrupt["0000003/101"]


def test_two_shards_run_separately_merge_to_the_same_result_as_one_run(curated, toy, tmp_path):
    out, _ = curated
    cli("epgs", "--emoset", toy / "emoset", "--num_shards", 2, "--work_dir", tmp_path / "epgs", "--data_root",
        tmp_path / "EmoPair", *EPGS_FLAGS)
    for shard in ("shard-00000-of-00002.json", "shard-00001-of-00002.json"):
        assert (tmp_path / "epgs" / shard).read_text() == (out / "epgs" / shard).read_text()
    cli("epas", "--ip2p_folders", toy / "ip2p", "--num_shards", 3, "--work_dir", tmp_path / "epas", "--data_root",
        tmp_path / "EmoPair", *EPAS_FLAGS)
    merge(tmp_path, tmp_path / "epas", tmp_path / "epgs")
    assert (tmp_path / "data_EmoPair.json").read_text() == (out / "data_EmoPair.json").read_text()


def test_kill_and_rerun_gives_the_uninterrupted_json(toy, tmp_path, monkeypatch):
    parquet = ["--ip2p_parquet", toy / "train-00000.parquet", "--num_shards", 3, *EPAS_FLAGS, "--batch_size", 1]
    cli("epas", *parquet, "--work_dir", tmp_path / "full" / "epas", "--data_root", tmp_path / "full" / "EmoPair")
    merge(tmp_path / "full", tmp_path / "full" / "epas")

    killed = tmp_path / "killed"
    real = epas.predictor_probs

    def dies_in_the_second_shard(*args):
        """Killed while labelling the first batch after a shard was finished."""
        if list((killed / "epas").glob("shard-*.json")):
            raise KeyboardInterrupt("killed")
        return real(*args)

    monkeypatch.setattr(epas, "predictor_probs", dies_in_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        cli("epas", *parquet, "--work_dir", killed / "epas", "--data_root", killed / "EmoPair")
    finished = sorted((killed / "epas").glob("shard-*.json"))
    assert 1 <= len(finished) < 3 and not list((killed / "epas").glob(".*tmp*"))
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    monkeypatch.setattr(epas, "predictor_probs", real)
    result = cli("epas", *parquet, "--work_dir", killed / "epas", "--data_root", killed / "EmoPair")
    assert sorted(result["skipped"]) == [int(p.name[6:11]) for p in finished]
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    report = merge(killed, killed / "epas")
    assert report["epas"]["corrupt_inputs"] == 1 and "row 2 original_image" in report["epas"]["corrupt_named"][0][
        "problem"]
    assert (killed / "data_EmoPair.json").read_text() == (tmp_path / "full" / "data_EmoPair.json").read_text()
    assert len(json.loads((killed / "data_EmoPair.json").read_text())) == 5


def test_every_epgs_candidate_records_its_scores_and_the_filters_keep_exactly_the_passing_ones(toy, tmp_path,
                                                                                                monkeypatch):
    """A scripted edit (the source darkened); scores computed here independently; thresholds between them."""
    predictor, lpips = tiny_predictor(0), load_lpips(random_seed=0)
    expected, per_image = {}, {}
    for path in sorted((toy / "emoset").glob("*/*.jpg")):
        source = to_batch([resize_square(open_image(path), 64)])
        edit = torch.from_numpy(to_uint8(source * 0.6)).permute(0, 3, 1, 2).float() / 255  # what gets saved
        name = path.relative_to(toy / "emoset").as_posix()
        per_image[name] = (ssim_reference(to_uint8(source[0]), to_uint8(edit[0])),
                           float(lpips_distance(lpips, source, edit)[0]))
        top, probs = int(predictor.probs(source).argmax()), predictor.probs(edit)[0]
        expected.update({(name, e): {"confidence": float(probs[k]), "ssim": per_image[name][0],
                                     "lpips": per_image[name][1]} for k, e in enumerate(EMOTIONS) if k != top})
    ssims, lpipses = sorted(v[0] for v in per_image.values()), sorted(v[1] for v in per_image.values())
    thresholds = EpgsThresholds(confidence=min(s["confidence"] for s in expected.values()),
                                ssim_low=(ssims[0] + ssims[1]) / 2, ssim_high=1.0,
                                lpips_min=(lpipses[0] + lpipses[1]) / 2)  # each filter rejects some image
    monkeypatch.setattr(BankEditor, "edit_with", lambda self, images, prompts, targets, gens: images * 0.6)
    cli("epgs", "--emoset", toy / "emoset", "--num_shards", 1, "--work_dir", tmp_path / "epgs", "--data_root",
        tmp_path / "EmoPair", *TINY, "--num_inference_steps", 1, "--confidence", thresholds.confidence,
        "--ssim_low", thresholds.ssim_low, "--ssim_high", 1, "--lpips_min", thresholds.lpips_min)
    records = json.loads((tmp_path / "epgs" / "shard-00000-of-00001.json").read_text())["records"]
    assert {(r["source_id"], r["scores"]["target"]) for r in records} == set(expected)
    for record in records:
        scores, want = record["scores"], expected[record["source_id"], record["scores"]["target"]]
        assert all(scores[k] == pytest.approx(v, abs=1e-5) for k, v in want.items()), (scores, want)
        assert record["rejected_by"] == rejected_by(want, thresholds)
        assert record["kept"] == (not record["rejected_by"]) == ("entry" in record)
    kept = {(r["source_id"], r["scores"]["target"]) for r in records if r["kept"]}
    assert kept == {key for key, want in expected.items() if not rejected_by(want, thresholds)} and kept
    assert all(any(name in r["rejected_by"] for r in records) for name in ("confidence", "ssim", "lpips"))
    assert all((tmp_path / "EmoPair" / r["entry"]["img_tgt_path"]).is_file() for r in records if r["kept"])
