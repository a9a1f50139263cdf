"""Table 1's "Ip2p" row: stock InstructPix2Pix with the target emotion word as the instruction (paper Sec. 4).

The pipeline is diffusers' own `StableDiffusionInstructPix2PixPipeline` with the model's own scheduler and
the pipeline's defaults (100 steps, text guidance 7.5, image guidance 1.5), at 224px like every method of
the paper. Rows are edited in batches of exactly `batch_size` (a short batch is padded with copies whose
results are dropped), and each row draws its noise from its own generator, so a row's output does not depend
on the other rows of its batch. `ip2p+critic` (and `lms+critic`, emoeditor/editors/lms.py) repeat the edit
in EmoEditor's critic loop (paper Sec. 3.3): each iteration edits the previous output with the same
instruction, written once from the untouched source.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from emoeditor.constants import EMOTIONS, IP2P_HUB_ID, IP2P_LOCAL_DIR
from emoeditor.editors.base import Editor, EditRequest, EditResult
from emoeditor.editors.critic_options import CRITIC_OPTIONS, critic_loop
from emoeditor.editors.registry import (
    DTYPES,
    MethodContext,
    choice,
    multiple_of_8,
    positive_int,
    register_editor,
)
from emoeditor.errors import MethodError
from emoeditor.fileio import missing_path
from emoeditor.models.components import load_base_components, looks_like_hub_id, sd_v1_ddim_scheduler
from emoeditor.models.predictor import load_predictor
from emoeditor.models.tiny import (
    TINY_IMAGE_SIZE,
    save_tiny_tokenizer,
    tiny_predictor,
    tiny_text_encoder,
    tiny_unet,
    tiny_vae,
)

PAPER_SIZE = 224  # every method of Table 1 edits 224 x 224 images


def target_word(target: torch.Tensor) -> str:
    """The emotion word of a target vector (its argmax for a mixture)."""
    return EMOTIONS[int(torch.as_tensor(target).argmax())]


def default_ip2p_model() -> str:
    """download_weights.py's local copy when it is there, else the hub id (needs network)."""
    return IP2P_LOCAL_DIR if Path(IP2P_LOCAL_DIR).exists() else IP2P_HUB_ID


def check_model_spec(spec: str, option: str, what: str, method: str) -> str:
    """A path-looking spec must exist (a hub id is tried as such): MethodError naming the option otherwise."""
    spec = str(spec)
    if not looks_like_hub_id(spec) and not Path(spec).exists():
        raise MethodError(f"{missing_path(spec, f'{method} option {option}')}; pass {option}=<a local folder of "
                          f"{what}> (or its hub id on a machine with network)")
    return spec


def load_ip2p_pipeline(spec: str, dtype: Optional[torch.dtype] = None, method: str = "ip2p"):
    """The stock pipeline from a diffusers folder or hub id, with the folder's own scheduler, no safety checker."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    spec = check_model_spec(spec, "model", f"InstructPix2Pix in the diffusers layout ({IP2P_HUB_ID})", method)
    parts = load_base_components(spec, dtype)  # clear errors for incomplete folders and unreachable hub ids
    parts.pop("scheduler")  # that is EmoEditor's DDIM; the stock pipeline keeps the model's own
    local = {} if looks_like_hub_id(spec) else {"local_files_only": True}
    try:
        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            spec, **parts, **local, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    except (OSError, ValueError) as exc:
        raise MethodError(f"{method} option model={spec!r}: cannot load its scheduler/ or model_index.json "
                          f"({str(exc).splitlines()[0]}); copy the whole {IP2P_HUB_ID} folder") from None
    return pipe


def tiny_ip2p_pipeline(seed: int = 0):
    """The tiny random-weight InstructPix2Pix of emoeditor.models.tiny, in memory."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    with tempfile.TemporaryDirectory() as folder:  # the CLIP tokenizer is only built from vocab files
        tokenizer = save_tiny_tokenizer(folder)
    return StableDiffusionInstructPix2PixPipeline(
        vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed), tokenizer=tokenizer, unet=tiny_unet(seed),
        scheduler=sd_v1_ddim_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)


class Ip2pEditor(Editor):
    """One InstructPix2Pix edit per row; the instruction is the target word (subclasses write others)."""

    name = "ip2p"

    def __init__(self, pipe, model_name: str, size: Optional[int] = PAPER_SIZE, num_inference_steps: int = 100,
                 guidance_scale: float = 7.5, image_guidance_scale: float = 1.5, batch_size: int = 1):
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)
        self.model_name = model_name
        self.size = size
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.image_guidance_scale = image_guidance_scale
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    def instructions(self, sources: torch.Tensor, targets: torch.Tensor) -> list[dict]:
        """Per row, {"instruction": ...} and whatever else wrote it (recorded in the trace)."""
        return [{"instruction": target_word(t)} for t in targets]

    def describe(self, sources: torch.Tensor, targets: torch.Tensor) -> list[dict]:
        """Each row's trace: its instruction and the settings of the edit."""
        settings = {"method": self.name, "model": self.model_name, "scheduler": type(self.pipe.scheduler).__name__,
                    "num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                    "image_guidance_scale": self.image_guidance_scale, "size": self.size}
        return [{**settings, "target_emotion": target_word(t), "target": t.tolist(), **row}
                for t, row in zip(targets.float().cpu(), self.instructions(sources, targets))]

    def _resize(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(images.shape[-2:]) == tuple(size):
            return images
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)

    @torch.no_grad()
    def _edit(self, inputs: torch.Tensor, sources: torch.Tensor, targets: torch.Tensor,
              generators: Sequence[torch.Generator]) -> EditResult:
        traces = self.describe(sources, targets)
        height, width = inputs.shape[-2:]
        images = inputs.float() if self.size is None else self._resize(inputs.float(), (self.size, self.size))
        outputs = []
        for start in range(0, images.shape[0], self.batch_size):
            rows = images[start:start + self.batch_size]
            prompts = [t["instruction"] for t in traces[start:start + self.batch_size]]
            gens = list(generators[start:start + self.batch_size])
            n, pad = rows.shape[0], self.batch_size - rows.shape[0]
            if pad:  # padding rows: copies of the first, throwaway generators
                rows = torch.cat([rows, rows[:1].expand(pad, *rows.shape[1:])])
                prompts += prompts[:1] * pad
                gens += [torch.Generator(gens[0].device).manual_seed(0) for _ in range(pad)]
            out = self.pipe(prompt=prompts, image=rows.to(self.device), num_inference_steps=self.num_inference_steps,
                            guidance_scale=self.guidance_scale, image_guidance_scale=self.image_guidance_scale,
                            generator=gens, output_type="pt").images
            outputs.append(out[:n].float())
        edited = self._resize(torch.cat(outputs), (height, width)).clamp(0, 1)
        return EditResult(images=edited.to(inputs.device), traces=traces)

    def edit(self, images: torch.Tensor, targets: torch.Tensor,
             generators: Sequence[torch.Generator]) -> EditResult:
        return self._edit(images, images, targets, generators)

    def edit_step(self, request: EditRequest) -> EditResult:
        """Inside the critic loop: edit the current input, with the instruction written for the source."""
        return self._edit(request.inputs, request.source_images, request.targets, request.generators)


IP2P_OPTIONS = {
    "weights": choice("pretrained", "tiny"), "seed": int, "model": str, "dtype": choice(*DTYPES),
    "size": multiple_of_8, "num_inference_steps": positive_int, "guidance_scale": float, "image_guidance_scale": float,
    "batch_size": positive_int,
}
CRITIC_LOOP_OPTIONS = {"predictor": str, **CRITIC_OPTIONS}
PREDICTOR_PATH = {"predictor": "the emotion predictor P of the critic (a folder or emo_predictor.pt)"}


def ip2p_settings(options: dict, context: MethodContext, method: str) -> tuple:
    """(pipeline, model name, Editor keywords) from the Ip2p options (popped from `options`)."""
    tiny = options.pop("weights", "pretrained") == "tiny"
    seed = int(options.pop("seed", 0))
    dtype = options.pop("dtype", None) or context.extra.get("dtype")
    if dtype and dtype not in DTYPES:
        raise MethodError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    spec = options.pop("model", None)
    if tiny and spec is None:  # weights=tiny builds the components no option names
        pipe, name = tiny_ip2p_pipeline(seed), f"tiny-ip2p-seed{seed}"
    else:
        name = spec or default_ip2p_model()
        pipe = load_ip2p_pipeline(name, DTYPES.get(dtype), method)
    if dtype:
        pipe = pipe.to(dtype=DTYPES[dtype])
    steps = options.pop("num_inference_steps", context.num_inference_steps)
    kwargs = {"size": int(options.pop("size", TINY_IMAGE_SIZE if tiny else PAPER_SIZE)),
              "batch_size": int(options.pop("batch_size", context.batch_size))}
    if steps is not None:
        kwargs["num_inference_steps"] = int(steps)
    for key in ("guidance_scale", "image_guidance_scale"):
        if key in options:
            kwargs[key] = float(options.pop(key))
    return pipe.to(context.device), name, kwargs


def predictor_probs(options: dict, context: MethodContext, tiny: bool, seed: int):
    """P's probabilities for the critic: option/--predictor, or the tiny random P for weights=tiny."""
    path = options.pop("predictor", None) or context.predictor
    if path is not None:
        return load_predictor(path, device=context.device).probs
    if tiny:
        return tiny_predictor(seed).to(context.device).probs
    raise MethodError("the critic loop needs the emotion predictor P: pass --predictor or :predictor=<path>")


def with_critic(build, options: dict, context: MethodContext) -> Editor:
    """`build(editor options)` wrapped in the critic loop; the loop's batch size is the editor's too."""
    opts = dict(options)
    probs = predictor_probs(opts, context, opts.get("weights") == "tiny", int(opts.get("seed", 0)))
    loop_opts = {k: opts.pop(k) for k in CRITIC_OPTIONS if k in opts}
    batch_size = int(opts.setdefault("batch_size", str(context.batch_size)))
    return critic_loop(build(opts, context), probs, loop_opts, context, batch_size)


@register_editor("ip2p", paper_row="Ip2p", options=IP2P_OPTIONS)
def _ip2p(options: dict, context: MethodContext) -> Editor:
    """Stock InstructPix2Pix, instruction = the target word. Options: weights (pretrained|tiny), seed (of the
    tiny weights), model (folder or hub id), dtype, size, num_inference_steps, guidance_scale,
    image_guidance_scale, batch_size."""
    opts = dict(options)
    pipe, name, kwargs = ip2p_settings(opts, context, "ip2p")
    return Ip2pEditor(pipe, name, **kwargs)


@register_editor("ip2p+critic", options={**IP2P_OPTIONS, **CRITIC_LOOP_OPTIONS}, paths=PREDICTOR_PATH)
def _ip2p_critic(options: dict, context: MethodContext) -> Editor:
    """Ip2p repeated in the paper's critic loop. Options: ip2p's, predictor and the critic's (critic,
    num_loop, ssim_low, ssim_high, confidence, confidence_mode, direction_probs, return_candidates)."""
    return with_critic(_ip2p, options, context)
