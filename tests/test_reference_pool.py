"""The reference pool of the CT and NST baselines: EmoSet splits, JSON pools, seeded draws, clear errors."""

import json

import pytest
import torch

from emoeditor.constants import EMOTIONS
from emoeditor.data.emoset import read_release_list
from emoeditor.data.reference_pool import ReferencePool, ReferencePoolError, method_pool, toy_reference_pool
from emoeditor.data.toy_emoset import write_toy_emoset
from emoeditor.errors import ImageLoadError, MethodError
from emoeditor.imageio import load_image


@pytest.fixture(scope="module")
def emoset(tmp_path_factory):
    return write_toy_emoset(tmp_path_factory.mktemp("emoset"), "release", per_class=(3, 1, 2), image_size=64, seed=0)


def listed(root, split):
    return {str(root / img.path) for img in read_release_list(root, split)}


def test_emoset_pool_uses_the_train_split_by_default(emoset):
    pool = ReferencePool.open(emoset)
    assert pool.counts() == {e: 3 for e in EMOTIONS}
    train, test = listed(emoset, "train"), listed(emoset, "test")
    assert {p for paths in pool.paths.values() for p in paths} == train
    drawn = {pool.draw(e, torch.Generator().manual_seed(s), 48)[1] for e in EMOTIONS for s in range(20)}
    assert drawn <= train and not drawn & test
    assert ReferencePool.open(emoset, split="test").counts() == {e: 2 for e in EMOTIONS}
    assert ReferencePool.open(emoset, split="all").counts() == {e: 6 for e in EMOTIONS}
    assert "train split" in pool.source


def test_folder_layout_with_split_folders(tmp_path):
    root = write_toy_emoset(tmp_path / "emoset", "folders", per_class=(2, 1, 1), image_size=64, seed=1)
    pool = ReferencePool.open(root)
    assert pool.counts() == {e: 2 for e in EMOTIONS}
    assert all("/train/" in p for paths in pool.paths.values() for p in paths)


def test_class_folders_without_split_lists_offer_every_image(emoset, tmp_path):
    (tmp_path / "fear").mkdir()
    first = sorted(listed(emoset, "test"))[0]
    (tmp_path / "fear" / "a.jpg").write_bytes(open(first, "rb").read())
    pool = ReferencePool.open(tmp_path)  # split "train" asked, but there is no split information
    assert pool.paths["fear"] == [str(tmp_path / "fear" / "a.jpg")] and "no split lists" in pool.source


def test_draw_is_uniform_by_the_generator_and_loads_the_image(emoset):
    pool = ReferencePool.open(emoset)
    paths = pool.paths["fear"]
    for seed in range(6):
        image, path = pool.draw("fear", torch.Generator().manual_seed(seed), 40)
        expected = int(torch.randint(len(paths), (1,), generator=torch.Generator().manual_seed(seed)))
        assert path == paths[expected]
        assert torch.equal(image, load_image(path, 40))  # the project's loader, bilinear to the size asked
    seen = {pool.draw("awe", torch.Generator().manual_seed(s))[1] for s in range(40)}
    assert seen == set(pool.paths["awe"])
    image, _ = pool.draw("awe", torch.Generator().manual_seed(0), (48, 40))
    assert image.shape == (3, 48, 40) and 0 <= image.min() and image.max() <= 1
    target = torch.tensor([0.1, 0, 0, 0, 0, 0, 0.6, 0.3])  # a mixture: its largest weight (fear) names it
    _, path, emotion = pool.draw_for(target, torch.Generator().manual_seed(3))
    assert emotion == "fear" and path == pool.draw("fear", torch.Generator().manual_seed(3))[1]


def test_json_pool_resolves_paths_relative_to_the_file(emoset, tmp_path):
    rel = sorted(listed(emoset, "train"))[:2]
    spec = tmp_path / "refs" / "pool.json"
    spec.parent.mkdir()
    (tmp_path / "refs" / "a.jpg").write_bytes(open(rel[0], "rb").read())
    spec.write_text(json.dumps({"Sadness": ["a.jpg", rel[1]]}))  # names case-insensitive; absolute kept
    pool = ReferencePool.open(spec)
    assert pool.paths["sadness"] == [str(tmp_path / "refs" / "a.jpg"), rel[1]]
    assert pool.counts()["fear"] == 0
    with pytest.raises(ReferencePoolError, match=r"pool.json has no images of fear .*sadness"):
        pool.draw("fear", torch.Generator().manual_seed(0))
    with pytest.raises(ReferencePoolError, match="unknown emotion 'joy'"):
        pool.draw("joy", torch.Generator().manual_seed(0))


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read it as JSON"),
    ('[{"path": "a.jpg", "emotion": "fear"}]', "expected"),
    ('{"joy": ["a.jpg"]}', "unknown emotion 'joy'"),
])
def test_malformed_json_pools(tmp_path, content, message):
    (tmp_path / "pool.json").write_text(content)
    with pytest.raises(ReferencePoolError, match=message):
        ReferencePool.open(tmp_path / "pool.json")


def test_missing_and_unusable_pools(tmp_path):
    with pytest.raises(ReferencePoolError, match=r"reference pool .*nowhere does not exist"):
        ReferencePool.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReferencePoolError, match="neither an EmoSet release"):
        ReferencePool.open(tmp_path / "empty")
    with pytest.raises(ReferencePoolError, match="split 'dev'"):
        ReferencePool.open(tmp_path / "empty", split="dev")
    with pytest.raises(MethodError, match=r"ct:pool=PATH.*weights=tiny"):
        method_pool("ct", None)
    with pytest.raises(MethodError, match=r"option pool=.*nowhere"):
        method_pool("ct", str(tmp_path / "nowhere"))


def test_unreadable_reference_names_the_file_and_the_pool(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (tmp_path / "pool.json").write_text(json.dumps({"anger": ["broken.jpg"]}))
    with pytest.raises(ImageLoadError, match=r"pool.json: .*broken.jpg"):
        ReferencePool.open(tmp_path / "pool.json").draw("anger", torch.Generator().manual_seed(0))


def test_toy_pool_is_seeded_and_covers_every_emotion():
    a, b = (toy_reference_pool(per_class=2, image_size=64, seed=0) for _ in range(2))
    assert a.counts() == {e: 2 for e in EMOTIONS}
    for emotion in ("amusement", "fear"):
        (x, px), (y, py) = (p.draw(emotion, torch.Generator().manual_seed(5), 32) for p in (a, b))
        assert px == py and px.startswith(f"toy/{emotion}_") and torch.equal(x, y) and x.shape == (3, 32, 32)
    other = toy_reference_pool(per_class=2, image_size=64, seed=1)
    assert not torch.equal(a.draw("fear", torch.Generator().manual_seed(0))[0],
                           other.draw("fear", torch.Generator().manual_seed(0))[0])
    # the styles differ: fear's toy references are darker than amusement's
    mean = {e: torch.stack([a.draw(e, torch.Generator().manual_seed(s))[0] for s in range(4)]).mean()
            for e in ("amusement", "fear")}
    assert mean["fear"] < mean["amusement"]
