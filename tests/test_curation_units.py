"""EmoPair curation without models: filters, keep rules, the bank, shard assignment, readers, merge refusals."""

import hashlib
import io
import itertools
import json

import numpy as np
import pytest
from PIL import Image

from emoeditor.constants import EMOTIONS
from emoeditor.curation.filters import EPAS_RULES, EPGS_FILTERS, EpasRule, EpgsThresholds, epas_counts, rejected_by
from emoeditor.curation.instructions import DEFAULT_BANK, bank_problems, load_bank
from emoeditor.curation.merge import merge
from emoeditor.curation.shards import digest_of, my_shards, shard_of, shard_path, write_shard
from emoeditor.curation.sources import Corrupt, Ip2pFolders, Ip2pParquet
from emoeditor.errors import EmoEditorError, ImageLoadError


def scripted_candidates():
    """Every combination of values on, just inside and outside each threshold."""
    grid = itertools.product([0.5, 0.9, 0.9000001, 0.99], [0.2, 0.3, 0.31, 0.45, 0.6, 0.7], [0.05, 0.1, 0.11, 0.5])
    return [{"target": "awe", "top_class": "awe" if c > 0.5 else "fear", "confidence": c, "ssim": s, "lpips": d}
            for c, s, d in grid]


@pytest.mark.parametrize("thresholds", [EpgsThresholds(), EpgsThresholds(0.5, 0.2, 0.7, 0.05)])
def test_each_filter_removes_exactly_the_candidates_that_violate_it(thresholds):
    candidates = scripted_candidates()
    expected = {"confidence": lambda c: c["confidence"] <= thresholds.confidence,
                "ssim": lambda c: not (thresholds.ssim_low < c["ssim"] < thresholds.ssim_high),
                "lpips": lambda c: c["lpips"] <= thresholds.lpips_min}
    assert set(EPGS_FILTERS) == set(expected)
    for c in candidates:
        assert set(rejected_by(c, thresholds)) == {name for name, violates in expected.items() if violates(c)}, c
    kept = [c for c in candidates if not rejected_by(c, thresholds)]
    assert 0 < len(kept) < len(candidates)
    if thresholds == EpgsThresholds():  # the paper's: 0.9, (0.3, 0.6), 0.1
        assert {(c["confidence"], c["ssim"], c["lpips"]) for c in kept} == {
            (c, s, d) for c in (0.9000001, 0.99) for s in (0.31, 0.45) for d in (0.11, 0.5)}


def test_epas_rules_count_every_rule():
    records = [{"scores": {"class_source": s, "class_target": t, "confidence_target": c}}
               for s, t, c in [("awe", "awe", 0.9), ("awe", "excitement", 0.4), ("awe", "fear", 0.7),
                               ("sadness", "anger", 0.2), ("sadness", "sadness", 0.1)]]
    assert epas_counts(records, EpasRule("changed", 0.5)) == {"all": 5, "changed": 3, "cross_valence": 1,
                                                              "confident": 1}
    assert epas_counts(records, EpasRule("changed", 0.1))["confident"] == 3
    assert set(EPAS_RULES) == {"all", "changed", "cross_valence", "confident"}


def test_the_shipped_bank_covers_every_emotion_with_ten_distinct_instructions():
    bank = load_bank(DEFAULT_BANK)
    assert list(bank) == list(EMOTIONS)
    assert all(len(set(bank[e])) >= 10 for e in EMOTIONS)
    assert "make it a sunny festival with fireworks" in bank["excitement"]


def test_a_bad_bank_is_named_with_every_problem(tmp_path):
    bank = {e: [f"instruction {i}" for i in range(10)] for e in EMOTIONS}
    bank["awe"] = bank["awe"][:4]
    bank["fear"][3] = ""
    bank["joy"] = ["x"] * 10
    del bank["sadness"]
    problems = bank_problems(bank)
    assert any("awe: 4 instructions" in p for p in problems) and any("fear: instruction(s) [3]" in p for p in problems)
    assert any("'joy'" in p for p in problems) and any(p.startswith("sadness: missing") for p in problems)
    path = tmp_path / "bank.json"
    path.write_text(json.dumps({"instructions": bank}))
    with pytest.raises(EmoEditorError, match=f"instruction bank {path}: .*awe: 4 instructions"):
        load_bank(path)


def test_shards_come_from_a_stable_hash_and_are_dealt_over_processes():
    ids = [f"folder{i}/{i * 7}" for i in range(200)]
    for item_id in ids[:20]:  # an independent computation of the documented rule
        assert shard_of(item_id, 7) == int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "little") % 7
    counts = np.bincount([shard_of(i, 4) for i in ids], minlength=4)
    assert counts.min() > 30  # spread, not all in one shard
    assert my_shards(10, split=(1, 3)) == [1, 4, 7]
    assert my_shards(10, [9, 2, 5], split=(0, 2)) == [2, 9]
    with pytest.raises(EmoEditorError, match=r"--shard_id \[10\]"):
        my_shards(10, [10], split=(0, 1))


def jpeg_bytes(seed, size=40):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"original_prompt": [r[2] for r in rows],
                      "original_image": pa.array([{"bytes": r[0], "path": None} for r in rows], type=image),
                      "edit_prompt": [r[2] for r in rows],
                      "edited_image": pa.array([{"bytes": r[1], "path": None} for r in rows], type=image)})
    pq.write_table(table, path, row_group_size=3)
    return path


def test_parquet_is_streamed_and_a_corrupt_row_is_named(tmp_path):
    rows = [(jpeg_bytes(i), jpeg_bytes(100 + i), f"make it {i}") for i in range(7)]
    rows[4] = (b"\xff\xd8 not a jpeg", rows[4][1], rows[4][2])
    rows[5] = (rows[5][0], rows[5][1], "  ")
    path = write_parquet(tmp_path / "part-0.parquet", rows)
    asked = []
    items = list(Ip2pParquet([path]).items(lambda i: asked.append(i) or not i.endswith("1")))
    assert asked == [f"part-0.parquet/{i:08d}" for i in range(7)]
    assert [e.id for e in items] == [f"part-0.parquet/{i:08d}" for i in (0, 2, 3, 4, 5, 6)]
    assert isinstance(items[4], Corrupt) and "row 5: empty edit_prompt" in items[4].problem
    assert items[2].prompt == "make it 3"
    assert np.array_equal(np.asarray(items[2].load_target()), np.asarray(Image.open(io.BytesIO(rows[3][1]))))
    with pytest.raises(ImageLoadError, match=f"{path} row 4 original_image: unreadable"):
        items[3].load_source()
    with pytest.raises(EmoEditorError, match="no column"):
        bad = tmp_path / "other.parquet"
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"x": [1]}), bad)
        Ip2pParquet([bad])


def test_per_seed_folders_with_a_broken_prompt_are_named(tmp_path):
    for folder, prompt in (("0000000", {"edit": "add snow"}), ("0000001", "{broken")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "prompt.json").write_text(prompt if isinstance(prompt, str) else json.dumps(prompt))
        for seed in ("11", "22"):
            for k in (0, 1):
                (tmp_path / folder / f"{seed}_{k}.jpg").write_bytes(jpeg_bytes(int(seed) + k))
    (tmp_path / "not_a_pair").mkdir()
    items = list(Ip2pFolders(tmp_path).items(lambda i: True))
    assert [e.id for e in items] == ["0000000/11", "0000000/22", "0000001/11", "0000001/22"]
    assert items[1].prompt == "add snow" and items[1].load_source().size == (40, 40)
    assert all(isinstance(e, Corrupt) and "0000001/prompt.json: unreadable prompt file" in e.problem
               for e in items[2:])


def fake_stage(work_dir, stage, num_shards, thresholds, entries_per_shard=2, skip=()):
    """Shard files as a stage writes them (no images): for the merge's header checks."""
    for shard in range(num_shards):
        if shard in skip:
            continue
        header = {"stage": stage, "shard_id": shard, "num_shards": num_shards, "source": {}, "settings": {},
                  "thresholds": thresholds, "digests": {"predictor": "p", "thresholds": digest_of(thresholds)}}
        records = [{"id": f"{shard}-{i}", "kept": True, "scores": {"class_source": "awe", "class_target": "fear",
                                                                   "confidence_target": 0.7},
                    "entry": {"img_src_path": f"EPAS/{shard}-{i}_0.jpg", "img_tgt_path": f"EPAS/{shard}-{i}_1.jpg",
                              "class_source": "awe", "class_target": "fear", "source_softmax": [0.125] * 8,
                              "prompt": "add fire"}} for i in range(entries_per_shard)]
        write_shard(shard_path(work_dir, shard, num_shards), header, records, [])


def test_merge_refuses_a_shard_from_another_threshold_set_and_names_it(tmp_path):
    rule = EpasRule().as_dict()
    fake_stage(tmp_path / "epas", "epas", 3, rule)
    other = EpasRule("all").as_dict()
    fake_stage(tmp_path / "other", "epas", 3, other)
    (tmp_path / "other" / "shard-00001-of-00003.json").replace(tmp_path / "epas" / "shard-00001-of-00003.json")
    expected = {"epas": {"predictor": "p", "thresholds": digest_of(rule)}}
    with pytest.raises(EmoEditorError) as exc:
        merge([tmp_path / "epas"], tmp_path, tmp_path / "out.json", expected, check_images="none")
    message = str(exc.value)
    assert f"shard {tmp_path / 'epas' / 'shard-00001-of-00003.json'} was written with another thresholds" in message
    assert "'rule': 'all'" in message and not (tmp_path / "out.json").exists()

    fake_stage(tmp_path / "epas", "epas", 3, rule)  # all shards from the same rule again
    with pytest.raises(EmoEditorError, match="another predictor"):
        merge([tmp_path / "epas"], tmp_path, tmp_path / "out.json", {"epas": {"predictor": "q"}}, check_images="none")
    report = merge([tmp_path / "epas"], tmp_path, tmp_path / "out.json", expected, check_images="none")
    assert report["entries"] == 6 and len(json.loads((tmp_path / "out.json").read_text())) == 6


def test_merge_names_missing_shards_and_drops_duplicates(tmp_path):
    rule = EpasRule().as_dict()
    expected = {"epas": {"predictor": "p", "thresholds": digest_of(rule)}}
    fake_stage(tmp_path / "epas", "epas", 4, rule, skip=(2,))
    with pytest.raises(EmoEditorError, match=r"1 of 4 shards not finished \(first: \[2\]\)"):
        merge([tmp_path / "epas"], tmp_path, tmp_path / "out.json", expected, check_images="none")
    path = tmp_path / "epas" / "shard-00003-of-00004.json"
    data = json.loads(path.read_text())
    data["records"].append(dict(data["records"][0], id="3-zz"))  # same images under another id
    path.write_text(json.dumps(data))
    report = merge([tmp_path / "epas"], tmp_path, tmp_path / "out.json", expected, check_images="none",
                   allow_missing=True)
    assert (report["entries"], report["duplicates_dropped"], report["epas"]["shards"]) == (6, 1, 3)
