"""Curation's entry points and model pieces: CLI flags and errors, LPIPS loading offline, the drafting script."""

import json

import pytest
import torch
from repo_scripts import load_script

from emoeditor.cli import curate
from emoeditor.config import run_cli
from emoeditor.constants import EMOTIONS
from emoeditor.curation import perceptual
from emoeditor.curation.filters import EpgsThresholds
from emoeditor.errors import MissingWeightsError


def test_every_threshold_and_the_shard_flags_are_flags(capsys):
    for command, flags in (("epgs", ("--confidence", "--ssim_low", "--ssim_high", "--lpips_min", "--bank",
                                     "--num_shards", "--shard_id", "--tiny", "--lpips_alexnet")),
                           ("epas", ("--keep_rule", "--epas_confidence", "--ip2p_folders", "--ip2p_parquet")),
                           ("merge", ("--confidence", "--keep_rule", "--allow_missing", "--out_json"))):
        with pytest.raises(SystemExit):
            curate.main([command, "--help"])
        text = capsys.readouterr().out
        assert all(flag in text for flag in flags), (command, text)
    args = curate.build_parser().parse_args(["epgs", "--emoset", "x"])
    assert curate._thresholds(args) == EpgsThresholds(0.9, 0.3, 0.6, 0.1)  # Supp. S1 by default


def test_a_missing_source_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: curate.main(["epas", "--tiny", "--ip2p_folders", str(tmp_path / "nope"), "--work_dir",
                                     str(tmp_path / "w"), "--data_root", str(tmp_path / "d"), "--quiet"]))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err and f"{tmp_path / 'nope'} does not exist" in err


def test_lpips_loads_a_local_alexnet_with_the_bundled_linear_layers(tmp_path):
    import lpips
    from torchvision.models import alexnet

    features = alexnet(weights=None).features
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "alexnet.pth")
    model = perceptual.load_lpips(tmp_path / "alexnet.pth")
    assert torch.equal(model.net.slice1[0].weight, features[0].weight)
    assert torch.equal(getattr(model.net.slice5, "10").bias, features[10].bias)  # slices keep feature indices
    bundled = torch.load(perceptual.Path(lpips.__file__).parent / "weights/v0.1/alex.pth", map_location="cpu",
                         weights_only=True)
    assert torch.equal(model.lin2.model[1].weight, bundled["lin2.model.1.weight"])
    a = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    distance = perceptual.lpips_distance(model, a, a.flip(-1))
    assert torch.allclose(distance, model(a * 2 - 1, a.flip(-1) * 2 - 1).flatten().double(), atol=1e-6)
    assert perceptual.lpips_distance(model, a, a).abs().max() < 1e-6

    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth.*--lpips_alexnet"):
        perceptual.load_lpips(tmp_path / "missing.pth")


def test_draft_instructions_writes_drafts_for_every_emotion(tmp_path):
    script = load_script("scripts/draft_instructions.py")
    result = script.main(["--tiny", "--per_emotion", "2", "--out", str(tmp_path / "drafts.json"), "--quiet"])
    saved = json.loads((tmp_path / "drafts.json").read_text())
    assert saved == result and list(saved["drafts"]) == list(EMOTIONS)
    assert all(1 <= len(d) <= 2 and all(t.strip() for t in d) and len(set(d)) == len(d)
               for d in saved["drafts"].values())
