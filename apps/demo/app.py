"""The demo's page (Gradio Blocks): inputs on the left, the edit and what the critic saw on the right.

`edit_request` is the function the Edit button calls, minus the page: it turns the library's
errors (bad image, unknown emotion, a point off the valence-arousal scale, ...) into `gr.Error` with
the same message test.py prints, and reports progress per critic iteration. `build_app` lays out the
page around it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import gradio as gr

from apps.demo.engine import (
    BUNDLED_PHOTOS,
    INTENSITY_CHOICES,
    NO_INTENSITY,
    TARGET_MODES,
    DemoEdit,
    DemoEngine,
    build_target,
    load_photo,
)
from apps.demo.figures import VAPlane, probs_figure
from emoeditor.constants import EMOTIONS, NUM_LOOP, VA_NORMS
from emoeditor.editing.critic import CRITICS
from emoeditor.editing.intensity import INTENSITIES
from emoeditor.errors import EmoEditorError
from emoeditor.valence_arousal import parse_va, va_to_mixture

# System fonts only: the default theme's web fonts come from a CDN, and the demo must work offline.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])
CSS = ("#result img {width: 256px; height: 256px; object-fit: contain;} "  # a 64 px miniature edit, shown larger
       "#strip .caption-label {white-space: normal; overflow: visible; text-overflow: clip;}")
PLANE = VAPlane()
DEFAULT_VA = "{:.2f},{:.2f}".format(*VA_NORMS["excitement"])
INTENSITY_INFO = "; ".join(f"{name}: guidance {s['emotion_guidance']:g}, confidence > {s['confidence']:g}, "
                           f"{s['ssim_low']:g} < SSIM < {s['ssim_high']:g}" for name, s in INTENSITIES.items())
INTENSITY_INFO += f"; {NO_INTENSITY}: guidance 1 and the critic policy's own thresholds"


def parse_seed(seed) -> int:
    try:
        return int(seed)
    except (TypeError, ValueError):
        raise gr.Error(f"seed {seed!r}: enter a whole number") from None


def edit_request(engine: DemoEngine, upload: Optional[str], bundled: Optional[str], mode: str,
                 emotion: Optional[str], weights: Sequence[float], va: Optional[str], intensity: str, seed,
                 critic: str, num_loop, progress: Optional[gr.Progress] = None) -> DemoEdit:
    """One edit from the page's values; any bad input raises gr.Error with the library's message."""
    try:
        photo = load_photo(upload, bundled)
        target, point = build_target(mode, emotion, weights, va)
        loops = 1 if critic == "none" else int(num_loop or engine.num_loop)
        seed = parse_seed(seed)
        report = None
        if progress is not None:
            progress((0, loops), desc="editing")

            def report(k: int) -> None:
                progress((k, loops), desc=f"critic iteration {k} of at most {loops}")

        return engine.edit(photo, target, seed, critic, loops, intensity, target_va=point, on_step=report)
    except EmoEditorError as exc:
        raise gr.Error(str(exc)) from None


def page_outputs(edit: DemoEdit) -> tuple:
    """What the page shows for an edit, in the order of build_app's outputs."""
    return (edit.result_image(), edit.summary(), edit.strip(),
            probs_figure(edit.source_probs, edit.returned_probs, edit.trace["target"]), edit.va_figure(), edit.trace)


def preview(upload: Optional[str], bundled: Optional[str]):
    """The photo that will be edited, or the loader's message when it cannot be."""
    try:
        return load_photo(upload, bundled)
    except EmoEditorError as exc:
        raise gr.Error(str(exc)) from None


def va_choice(va: str) -> tuple:
    """A typed or clicked "V,A": the plane with the point starred and the mixture it stands for."""
    try:
        point = parse_va(va)
    except EmoEditorError as exc:
        raise gr.Error(str(exc)) from None
    weights = va_to_mixture(*point).tolist()
    mixture = ", ".join(f"{EMOTIONS[i]} {w:.2f}" for i, w in sorted(enumerate(weights), key=lambda x: -x[1]) if w > 0)
    return PLANE.image(point), f"target mixture: {mixture}"


def va_click(evt: gr.SelectData) -> tuple:
    """A click on the plane (pixel coordinates of the image) -> the "V,A" box, the plane, the mixture."""
    text = "{:.2f},{:.2f}".format(*PLANE.to_va(*evt.index))
    return (text, *va_choice(text))


def build_app(engine: DemoEngine, concurrency: int = 1) -> gr.Blocks:
    """The page; `concurrency` edits run at once, the rest wait in Gradio's queue (one GPU, many users)."""
    plane, mixture = va_choice(DEFAULT_VA)
    with gr.Blocks(title="EmoEditor demo", analytics_enabled=False) as demo:
        gr.Markdown("# EmoEditor: edit a photo toward an emotion\nEach edit is judged by the critic (the emotion "
                    "predictor P and SSIM to the source) and edited again until it is accepted (paper Sec. 3.3).")
        gr.Markdown(engine.weights.describe(), elem_id="weights")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Upload a photo", type="filepath", elem_id="photo-upload")
                bundled = gr.Dropdown(list(BUNDLED_PHOTOS), value=BUNDLED_PHOTOS[0], elem_id="bundled",
                                      label="...or a bundled photo (scikit-image)")
                source = gr.Image(preview(None, BUNDLED_PHOTOS[0]), label="Photo to edit", interactive=False,
                                  height=200, elem_id="source")
                mode = gr.Radio(list(TARGET_MODES), value=TARGET_MODES[0], label="Target", elem_id="mode")
                with gr.Group(visible=True) as emotion_box:
                    emotion = gr.Dropdown(list(EMOTIONS), value="sadness", label="Target emotion",
                                          elem_id="emotion")
                with gr.Group(visible=False) as mixture_box:
                    sliders = [gr.Slider(0, 1, value=0, step=0.05, label=e, elem_id=f"mix-{e}") for e in EMOTIONS]
                with gr.Group(visible=False) as va_box:
                    va_plane = gr.Image(plane, label="Click a point of the valence-arousal plane", interactive=False,
                                        height=380, format="png", elem_id="va-plane")
                    va = gr.Textbox(DEFAULT_VA, label="valence,arousal (1-9 each; Enter to apply)", elem_id="va")
                    va_mixture = gr.Markdown(mixture, elem_id="va-mixture")
                intensity = gr.Radio(list(INTENSITY_CHOICES), value="medium", label="Intensity", info=INTENSITY_INFO,
                                     elem_id="intensity")
                seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                critic = gr.Radio(list(CRITICS), value="paper", label="Critic policy", elem_id="critic",
                                  info="paper: accept on SSIM band and confidence; official: the official test.py's "
                                       "logic; none: one edit")
                num_loop = gr.Slider(1, NUM_LOOP, value=engine.num_loop, step=1, label="At most this many edits",
                                     elem_id="num-loop")
                run = gr.Button("Edit", variant="primary", elem_id="run")
            with gr.Column(scale=2):
                result = gr.Image(label="Edited", interactive=False, height=256, format="png", elem_id="result")
                summary = gr.Markdown(elem_id="summary")
                strip = gr.Gallery(label="Critic iterations (SSIM to the source, P's confidence in the target)",
                                   columns=6, height=240, object_fit="contain", format="png", elem_id="strip")
                with gr.Row():
                    # unlabelled: a label would float over the figures' own titles
                    chart = gr.Plot(label="P's probabilities", show_label=False, format="png", scale=3,
                                    elem_id="prob-chart")
                    va_path = gr.Plot(label="valence-arousal path", show_label=False, format="png", scale=2,
                                      elem_id="va-path")
                with gr.Accordion("Trace (JSON)", open=False):
                    trace = gr.JSON(elem_id="trace")

        def on_edit(upload, bundled, mode, emotion, va, intensity, seed, critic, num_loop, *weights,
                    progress=gr.Progress()):  # noqa: B008 (Gradio's way to ask for progress)
            return page_outputs(edit_request(engine, upload, bundled, mode, emotion, weights, va, intensity, seed,
                                             critic, num_loop, progress))

        def on_mode(choice):
            return tuple(gr.update(visible=choice == m) for m in TARGET_MODES)

        mode.change(on_mode, mode, [emotion_box, mixture_box, va_box], queue=False)
        va_plane.select(va_click, None, [va, va_plane, va_mixture], concurrency_limit=None)
        va.submit(va_choice, va, [va_plane, va_mixture], concurrency_limit=None)
        bundled.input(lambda name: (None, preview(None, name)), bundled, [upload, source], concurrency_limit=None)
        # an upload replaces the bundled choice; clearing it brings the default photo back
        upload.upload(lambda path: (preview(path, None), None), upload, [source, bundled], concurrency_limit=None)
        upload.clear(lambda: (preview(None, BUNDLED_PHOTOS[0]), BUNDLED_PHOTOS[0]), None, [source, bundled],
                     concurrency_limit=None)
        run.click(on_edit, [upload, bundled, mode, emotion, va, intensity, seed, critic, num_loop, *sliders],
                  [result, summary, strip, chart, va_path, trace], concurrency_id="edit")
    return demo.queue(default_concurrency_limit=concurrency)
