"""Every odd input through test.py's run function: converted (and checked) or skipped with a named reason."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from emoeditor.cli import edit as test_cli  # test.py's entry point lives there
from emoeditor.cli.edit import write_tiny_assets
from emoeditor.errors import ImageLoadError
from emoeditor.imageio import pil_to_tensor
from emoeditor.models.predictor import load_predictor

REPO = Path(__file__).resolve().parent.parent

SIZE = 64


def photo(w=96, h=80):
    """A structured RGB image (gradients + a block) so conversions are visible in P's output."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.uint8)
    arr[h // 4: h // 2, w // 5: w // 2] = (250, 30, 60)
    return Image.fromarray(arr)


def huge_png(path: Path, w=9000, h=9000):
    """A valid PNG header claiming w x h pixels, written without allocating them."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
                     + chunk(b"IEND", b""))


def expected(img: Image.Image) -> torch.Tensor:
    """The RGB image test.py should have edited, converted independently of emoeditor.imageio."""
    return pil_to_tensor(img.resize((SIZE, SIZE), Image.BILINEAR))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    write_tiny_assets(root / "model", root / "predictor")
    d = root / "imgs"
    d.mkdir()
    base = photo()
    good = {}
    base.convert("CMYK").save(d / "cmyk.jpg", quality=95)
    good["cmyk.jpg"] = Image.open(d / "cmyk.jpg").convert("RGB")
    grey16 = (np.asarray(base.convert("L")).astype(np.uint16) * 257)
    Image.fromarray(grey16).save(d / "grey16.png")
    good["grey16.png"] = base.convert("L").convert("RGB")
    base.convert("L").save(d / "grey.png")
    good["grey.png"] = base.convert("L").convert("RGB")
    pal = base.convert("P", palette=Image.ADAPTIVE, colors=16)
    pal.save(d / "palette.png")
    good["palette.png"] = pal.convert("RGB")
    rgba = base.convert("RGBA")
    alpha = np.full((base.height, base.width), 255, np.uint8)
    alpha[:, : base.width // 2] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(d / "alpha.png")
    white = Image.new("RGBA", base.size, (255, 255, 255, 255))
    good["alpha.png"] = Image.alpha_composite(white, rgba).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    base.save(d / "exif_rotated.jpg", exif=exif, quality=95)
    good["exif_rotated.jpg"] = ImageOps.exif_transpose(Image.open(d / "exif_rotated.jpg")).convert("RGB")
    base.save(d / "plain.png")
    good["plain.png"] = base
    bad = {}
    data = (d / "cmyk.jpg").read_bytes()
    base.save(d / "truncated.jpg", quality=95)
    (d / "truncated.jpg").write_bytes((d / "truncated.jpg").read_bytes()[: len(data) // 3])
    bad["truncated.jpg"] = "truncated"
    base.resize((20, 20)).save(d / "tiny.png")
    bad["tiny.png"] = "too small"
    huge_png(d / "huge.png")
    bad["huge.png"] = "larger than"
    (d / "notes.txt").write_text("not an image")
    bad["notes.txt"] = "not an image"
    return root, good, bad


def run(root, out, *extra):
    return test_cli.main(["--config", str(REPO / "configs" / "infer_tiny.yaml"), "--model_dir", str(root / "model"),
                          "--predictor_path", str(root / "predictor"), "--input_path", str(root / "imgs"),
                          "--test_save_dir", str(out), "--num_inference_steps", "2", "--num_loop", "1",
                          "--critic", "none", "--batch_size", "4", "--no-save_strip", "--quiet", *extra])


def test_folder_run_converts_odd_images_and_skips_bad_files(folder, tmp_path):
    root, good, bad = folder
    summary = run(root, tmp_path)
    assert summary["done"] == len(good)
    skipped = dict((Path(p).name, reason) for p, reason in summary["skipped"])
    assert set(skipped) == set(bad)
    for name, needle in bad.items():
        assert name in skipped[name] and needle in skipped[name]  # the reason names the file
    import csv
    with open(tmp_path / "skipped.csv", newline="") as f:
        listed = {Path(r["input"]).name: r["reason"] for r in csv.DictReader(f)}
    assert listed == skipped
    predictor = load_predictor(root / "predictor")
    for name, img in good.items():
        trace = json.loads((tmp_path / "traces" / f"75863_awe_{Path(name).stem}.json").read_text())
        # P(source) in the trace is P of the independently converted image: the conversion was right
        ref = predictor.probs(expected(img)[None])[0]
        assert torch.allclose(torch.tensor(trace["source_probs"]), ref, atol=1e-5), name
        assert Image.open(tmp_path / f"75863_awe_{name}").size == (SIZE, SIZE)


def test_exif_rotation_is_applied(folder):
    root, good, _ = folder
    from emoeditor.imageio import load_image

    rotated = load_image(root / "imgs" / "exif_rotated.jpg")
    assert rotated.shape[1:] == (96, 80)  # 96 wide x 80 high, displayed rotated by 90 degrees


def test_a_single_bad_file_is_a_clear_error(folder, tmp_path):
    root, _, bad = folder
    for name, needle in bad.items():
        with pytest.raises(ImageLoadError, match=needle) as exc:
            run(root, tmp_path / name, "--input_path", str(root / "imgs" / name))
        assert name in str(exc.value)


def test_same_file_name_in_two_folders_is_refused(folder, tmp_path):
    from emoeditor.errors import EmoEditorError

    root, _, _ = folder
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        photo().save(tmp_path / sub / "same.png")
    with pytest.raises(EmoEditorError, match="same file name"):
        run(root, tmp_path / "out", "--input_path", str(tmp_path / "*" / "same.png"))


def test_output_ext_png_is_lossless(folder, tmp_path):
    root, _, _ = folder
    summary = run(root, tmp_path, "--input_path", str(root / "imgs" / "cmyk.jpg"), "--output_ext", "png")
    out = Path(summary["rows"][0]["output"])
    assert out.name == "75863_awe_cmyk.png" and Image.open(out).format == "PNG"


@pytest.mark.parametrize("side", [10000, 20000])
def test_a_huge_image_is_refused_by_our_rule_without_pil_warnings(tmp_path, side):
    """Past PIL's limit (89M pixels) Image.open warns (DecompressionBombWarning), past twice it raises; both
    are our 'too large' rule, and no warning leaks to the user."""
    import warnings

    from emoeditor.imageio import open_image

    huge_png(tmp_path / "huge.png", side, side)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageLoadError, match=f"huge.png: {side * side} pixels is larger than 8192"):
            open_image(tmp_path / "huge.png")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
