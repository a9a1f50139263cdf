"""The web demo (apps/demo) on the shipped miniature: its edit function directly, and the page in real
headless Chromium (Debian's chromium, via Playwright's Python client), offline."""

import base64
import io
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from repo_scripts import REPO

gr = pytest.importorskip("gradio")
pytest.importorskip("playwright")

from apps.demo.app import PLANE, edit_request, page_outputs, va_choice, va_click  # noqa: E402
from apps.demo.browser import (  # noqa: E402
    CHROMIUM,
    LOCAL,
    click_va,
    dismiss_errors,
    edit_in_page,
    launch_chromium,
    run_edit,
    running_demo,
)
from apps.demo.engine import NO_INTENSITY, DemoEngine, resolve_weights  # noqa: E402
from emoeditor.cli.edit import check_model_paths, strip_labels  # noqa: E402
from emoeditor.constants import EMOTIONS, OFFICIAL_CRITIC, VA_NORMS  # noqa: E402
from emoeditor.data.toy import load_toy_photo  # noqa: E402
from emoeditor.editing.intensity import INTENSITIES, intensity_settings  # noqa: E402
from emoeditor.emotions import parse_target, target_label  # noqa: E402
from emoeditor.errors import EmoEditorError, ImageLoadError, InvalidTargetError, MissingWeightsError  # noqa: E402
from emoeditor.imageio import open_image, to_square, to_uint8  # noqa: E402
from emoeditor.valence_arousal import mixture_to_va, parse_va, va_to_mixture  # noqa: E402

pytestmark = pytest.mark.apps
NO_WEIGHTS = [0.0] * len(EMOTIONS)


@pytest.fixture(scope="module")
def engine():
    return DemoEngine.load(resolve_weights(), device="cpu")


def _edit(engine, seed=0, emotion="sadness", critic="paper", num_loop=2, upload=None, intensity="medium",
          mode="emotion", weights=NO_WEIGHTS, va=None):
    return edit_request(engine, upload, "coffee", mode, emotion, weights, va, intensity, seed, critic, num_loop)


def _message(error_type, fn, *args):
    """The library's own message for a bad input, computed without the demo."""
    with pytest.raises(error_type) as info:
        fn(*args)
    return str(info.value)


def test_same_seed_same_edit_and_what_the_page_shows(engine):
    first, again, other = _edit(engine, seed=3), _edit(engine, seed=3), _edit(engine, seed=4)
    assert np.array_equal(first.result_image(), again.result_image())
    assert first.trace["iterations"] == again.trace["iterations"]
    assert not np.array_equal(first.result_image(), other.result_image())

    assert engine.image_size == 64 and first.result_image().shape == (64, 64, 3)  # the miniature's own size
    trace = first.trace
    assert trace["target"] == parse_target("sadness").tolist() and trace["seed"] == 3
    assert 1 <= len(trace["iterations"]) <= 2 and len(first.candidates) == len(trace["iterations"])
    # the strip: source, every iteration, the returned image, captioned with test.py's strip labels
    strip = first.strip()
    assert [caption for _, caption in strip] == [" · ".join(lines) for lines in strip_labels(trace)]
    assert np.array_equal(strip[-1][0], first.result_image())
    # a real edit: P's confidence in sadness rises (the miniature moves a photo toward the target style)
    sadness = EMOTIONS.index("sadness")
    assert first.returned_probs[sadness] > first.source_probs[sadness] + 0.2

    image, summary, gallery, chart, va_path, shown_trace = page_outputs(first)
    assert np.array_equal(image, first.result_image()) and shown_trace is trace and len(gallery) == len(strip)
    assert "**Target** sadness" in summary and f"{trace['returned_target_confidence']:.3f}" in summary
    bars = [p.get_height() for p in chart.axes[0].patches]  # source bars, then edit bars
    assert bars == pytest.approx(first.source_probs + first.returned_probs)
    # the VA path plot: P's expected (V, A) on the source, then after every iteration
    expected = [mixture_to_va(first.source_probs)] + [mixture_to_va(it["probs"]) for it in trace["iterations"]]
    assert any(xy.shape == (len(expected), 2) and np.allclose(xy, expected, atol=1e-4)
               for xy in plotted_lines(va_path)), "the VA plot does not draw the path of the trace"


def test_progress_counts_the_critic_iterations(engine):
    seen = []

    def progress(value, desc=None):
        seen.append(value)

    edit = edit_request(engine, None, "chelsea", "emotion", "fear", NO_WEIGHTS, None, "medium", 0, "paper", 3,
                        progress)
    n = len(edit.trace["iterations"])
    assert seen == [(k, 3) for k in range(n + 1)]


def test_critic_none_is_one_edit_and_mixtures_are_targets(engine):
    single = _edit(engine, critic="none", num_loop=9)
    assert single.trace["critic"] == "none" and len(single.trace["iterations"]) == 1
    weights = [0.5 if e in ("awe", "excitement") else 0.0 for e in EMOTIONS]
    mixed = _edit(engine, mode="mixture", emotion=None, weights=weights, num_loop=1)
    assert mixed.trace["target"] == parse_target("awe:0.5,excitement:0.5").tolist()


def test_valence_arousal_targets(engine):
    edit = _edit(engine, mode="valence-arousal", va="7.62, 6.21", num_loop=1)
    assert edit.trace["target"] == va_to_mixture(7.62, 6.21).tolist() and edit.trace["target_va"] == [7.62, 6.21]
    assert max(range(8), key=edit.trace["target"].__getitem__) == EMOTIONS.index("excitement")
    assert all(len(it["va"]) == 2 for it in edit.trace["iterations"])
    # the clickable plane: a pixel maps to the (V, A) under it and back, for every category's norm point
    for name, point in VA_NORMS.items():
        x, y = PLANE.to_pixel(*point)
        assert 0 <= x < PLANE.size_px and 0 <= y < PLANE.size_px
        assert PLANE.to_va(x, y) == pytest.approx(point, abs=1e-6), name
    text, image, mixture = va_click(gr.SelectData(None, {"index": [round(x), round(y)], "value": None}))
    assert tuple(map(float, text.split(","))) == pytest.approx(VA_NORMS["sadness"], abs=0.05)
    assert image.shape == (PLANE.size_px, PLANE.size_px, 3) and mixture.startswith("target mixture: sadness")
    assert not np.array_equal(image, PLANE.image(None))  # the chosen point is drawn


def test_intensity_sets_guidance_and_the_critics_thresholds(engine):
    high = _edit(engine, intensity="high", num_loop=1)
    assert high.trace["edit"]["emotion_guidance"] == INTENSITIES["high"]["emotion_guidance"]
    assert {k: high.trace["thresholds"][k] for k in ("confidence", "ssim_low", "ssim_high")} == {
        k: v for k, v in INTENSITIES["high"].items() if k != "emotion_guidance"}
    # medium is the paper's edit: the same bytes as no preset with the paper critic
    medium, off = _edit(engine, intensity="medium", num_loop=1), _edit(engine, intensity=NO_INTENSITY, num_loop=1)
    assert np.array_equal(medium.result_image(), off.result_image())
    assert not np.array_equal(medium.result_image(), high.result_image())
    # requests share the model but not their settings: two at once give what each gives alone
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda level: _edit(engine, intensity=level, num_loop=1), ["high", "medium"]))
    assert np.array_equal(both[0].result_image(), high.result_image())
    assert np.array_equal(both[1].result_image(), medium.result_image())
    # no preset keeps the official policy's own thresholds
    official = _edit(engine, intensity=NO_INTENSITY, critic="official", num_loop=1)
    assert official.trace["edit"]["emotion_guidance"] == 1.0
    assert {k: official.trace["thresholds"][k] for k in OFFICIAL_CRITIC} == OFFICIAL_CRITIC


def test_bad_inputs_get_the_library_messages(engine, tmp_path):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (20, 20)).save(tiny)
    cases = [
        (dict(upload=str(notes)), _message(ImageLoadError, open_image, notes)),
        (dict(upload=str(tiny)), _message(ImageLoadError, open_image, tiny)),
        (dict(emotion="happiness"), _message(InvalidTargetError, parse_target, "happiness")),
        (dict(emotion=""), _message(InvalidTargetError, parse_target, "")),
        (dict(mode="valence-arousal", va="9.5,3"), _message(InvalidTargetError, parse_va, "9.5,3")),
        (dict(mode="valence-arousal", va="happy"), _message(InvalidTargetError, parse_va, "happy")),
        (dict(intensity="extreme"), _message(EmoEditorError, intensity_settings, "extreme")),
    ]
    for kwargs, expected in cases:
        with pytest.raises(gr.Error) as info:
            _edit(engine, **kwargs)
        assert info.value.message == expected
    with pytest.raises(gr.Error) as info:
        _edit(engine, mode="mixture")
    assert info.value.message == _message(InvalidTargetError, parse_target, NO_WEIGHTS)
    assert "no positive weight" in info.value.message
    with pytest.raises(gr.Error, match="seed None: enter a whole number"):
        _edit(engine, seed=None)
    with pytest.raises(gr.Error) as info:
        va_choice("0,0")
    assert info.value.message == _message(InvalidTargetError, parse_va, "0,0")


def test_weights_banner_and_missing_weights(assets, tmp_path):
    mini = resolve_weights()
    assert mini.miniature and "Miniature model, not the paper's" in mini.describe()
    real = resolve_weights(assets / "model", assets / "predictor")
    assert not real.miniature and str(assets / "model") in real.describe() and "Miniature" not in real.describe()
    missing = tmp_path / "no_model"

    args = SimpleNamespace(model_dir=missing, predictor_path=real.predictor_path)
    with pytest.raises(MissingWeightsError) as info:
        resolve_weights(missing, real.predictor_path)
    assert str(info.value) == _message(MissingWeightsError, check_model_paths, args)
    with pytest.raises(EmoEditorError, match="unknown critic 'lenient'"):
        DemoEngine(None, mini, 64).edit(Image.new("RGB", (64, 64)), parse_target("awe"), critic="lenient")


def plotted_lines(fig) -> list[np.ndarray]:
    """The (x, y) points of every line a figure draws."""
    return [line.get_xydata() for ax in fig.axes for line in ax.get_lines()]


def test_command_line_errors_are_the_librarys(tmp_path):
    from apps.demo.__main__ import main

    missing = tmp_path / "no_model"
    with pytest.raises(MissingWeightsError, match="no_model"):
        main(["--model_dir", str(missing)])
    with pytest.raises(EmoEditorError, match="--concurrency must be at least 1"):
        main(["--concurrency", "0"])
    with pytest.raises(EmoEditorError, match="--image_size 60: use a multiple of 8"):
        main(["--image_size", "60"])


def _png_size(data_url: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).size


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Debian's chromium at {CHROMIUM} (apt install chromium)")
def test_demo_in_headless_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    photo = tmp_path / "astronaut.png"  # not the page's default photo, so the edit must use the upload
    Image.fromarray(load_toy_photo("astronaut")).save(photo)
    outside = []
    env = {"GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "OMP_NUM_THREADS": "1"}
    with running_demo(tmp_path / "demo.log", env=env) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: None if r.url.startswith(LOCAL) else outside.append(r.url))
            page.goto(url)
            assert "Miniature model, not the paper's" in page.locator("#weights").inner_text()

            # a bad target gets the library's message on the page
            page.locator("#mode").get_by_label("mixture", exact=True).check()
            page.locator("#run").click()
            page.get_by_text(_message(InvalidTargetError, parse_target, NO_WEIGHTS)).wait_for(timeout=30_000)
            dismiss_errors(page)

            edit_in_page(page, photo, "sadness", num_loop=3, seed=0)
            summary = page.locator("#summary").inner_text()
            iterations = int(re.search(r"of (\d+) \(", summary).group(1))
            assert "Target sadness" in summary and 1 <= iterations <= 3
            result = page.locator("#result img")
            assert result.evaluate("img => img.naturalWidth") == 64  # the miniature's edit, as the model made it
            assert page.locator("#strip img").count() == iterations + 2
            captions = page.locator("#strip .caption-label").all_inner_texts()
            assert len(captions) == iterations + 2 and captions[0].startswith("source")
            assert captions[-1].startswith("returned") and all("SSIM" in c for c in captions[1:-1])
            source_tile = page.locator("#strip img").first
            shown = Image.open(io.BytesIO(page.request.get(source_tile.get_attribute("src")).body()))
            assert np.array_equal(np.asarray(shown.convert("RGB")), to_uint8(to_square(open_image(photo), 64)))
            width, height = _png_size(page.locator("#prob-chart img").get_attribute("src"))
            assert width > 300 and height > 150
            assert page.locator("#va-path img").count() == 1

            # a click on the valence-arousal plane at fear's norm point (the box starts at excitement's), then an
            # edit toward the mixture of the clicked point
            click_va(page, *VA_NORMS["fear"])
            clicked = tuple(map(float, page.locator("#va input, #va textarea").first.input_value().split(",")))
            assert clicked == pytest.approx(VA_NORMS["fear"], abs=0.1)
            target = va_to_mixture(*clicked)
            fear = EMOTIONS.index("fear")
            assert max(range(len(EMOTIONS)), key=target.__getitem__) == fear
            assert f"target mixture: fear {target[fear]:.2f}" in page.locator("#va-mixture").inner_text()
            run_edit(page, f"Target {target_label(target)}")
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert outside == [], f"the page tried to reach the network: {outside[:5]}"
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copyfile(shot, artifacts / "demo.png")
    assert Image.open(artifacts / "demo.png").size[0] == 1400
