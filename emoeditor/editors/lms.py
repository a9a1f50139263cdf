"""Table 1's "LMS" row (Large Model Series, paper Supp. S2.3): BLIP caption -> language-model instruction -> Ip2p.

The caption of each source and the instruction for each (source, target) come from
`emoeditor.models.language.InstructionWriter` (cached on disk, so seeds, reruns and the critic loop's
iterations reuse them); the edit is the stock InstructPix2Pix of `Ip2pEditor`. The paper asked GPT-3; here
the language model is a local transformers causal LM (default DEFAULT_LLM) or, with `llm_url`, any
OpenAI-compatible endpoint. `lms+critic` repeats the edit in the critic loop with the source's instruction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from emoeditor.editors.base import Editor
from emoeditor.editors.ip2p import (
    CRITIC_LOOP_OPTIONS,
    IP2P_OPTIONS,
    PREDICTOR_PATH,
    Ip2pEditor,
    check_model_spec,
    ip2p_settings,
    target_word,
    with_critic,
)
from emoeditor.editors.registry import DTYPES, MethodContext, register_editor
from emoeditor.errors import MethodError
from emoeditor.models.language import (
    DEFAULT_CAPTIONER,
    DEFAULT_LLM,
    HTTP_TIMEOUT_S,
    BlipCaptioner,
    HttpInstructionModel,
    InstructionWriter,
    LanguageCache,
    LocalInstructionModel,
    default_cache_path,
    tiny_captioner,
    tiny_instruction_model,
)


class LmsEditor(Ip2pEditor):
    """Ip2p following the instruction a language model wrote from the source's caption and the target."""

    name = "lms"

    def __init__(self, pipe, model_name: str, writer: InstructionWriter, **kwargs):
        super().__init__(pipe, model_name, **kwargs)
        self.writer = writer

    def instructions(self, sources: torch.Tensor, targets: torch.Tensor) -> list[dict]:
        return [self.writer(sources[i], target_word(targets[i]), job=f"{self.name} row {i}")
                for i in range(sources.shape[0])]


def _timeout(value: str) -> float:
    if float(value) <= 0:
        raise ValueError("must be a positive number of seconds")
    return float(value)


LMS_OPTIONS = {**IP2P_OPTIONS, "captioner": str, "llm": str, "llm_url": str, "llm_model": str,
               "llm_key_env": str, "llm_timeout": _timeout, "cache": str}


def _cache(options: dict, context: MethodContext, tiny: bool) -> LanguageCache:
    """cache=<file>, cache=none (memory only), or the default: memory for tiny weights, else the evaluation's
    output folder when the harness names it (context.extra["out"]), else ~/.cache/emoeditor/lms."""
    path: Optional[str | Path] = options.pop("cache", None)
    if path is None and not tiny:
        out = context.extra.get("out")
        path = Path(out) / "lms_cache.jsonl" if out else default_cache_path()
    return LanguageCache(None if path is None or str(path).lower() == "none" else path)


def writer_from_options(options: dict, context: MethodContext, tiny: bool, seed: int) -> InstructionWriter:
    """Captioner, language model (local or HTTP) and cache from the LMS options (popped from `options`)."""
    dtype = DTYPES.get(options.get("dtype") or context.extra.get("dtype") or "")
    captioner_spec = options.pop("captioner", None)
    llm_spec = options.pop("llm", None)
    url, llm_model = options.pop("llm_url", None), options.pop("llm_model", None)
    key_env = options.pop("llm_key_env", "OPENAI_API_KEY")
    timeout = float(options.pop("llm_timeout", HTTP_TIMEOUT_S))
    if (url is None) != (llm_model is None):
        raise MethodError("lms: an HTTP language model needs both llm_url=<endpoint> and llm_model=<its model "
                          "name>; for a local model pass llm=<folder> (or nothing: " + DEFAULT_LLM + ")")
    if url is not None and llm_spec is not None:
        raise MethodError("lms: pass either llm=<local model> or llm_url=<endpoint>, not both")
    if tiny and captioner_spec is None:
        captioner = tiny_captioner(seed)
        captioner.model.to(context.device)
    else:
        spec = check_model_spec(captioner_spec or DEFAULT_CAPTIONER, "captioner", "a BLIP captioning model", "lms")
        captioner = BlipCaptioner.from_pretrained(spec, context.device, dtype)
    if url is not None:
        llm = HttpInstructionModel(url, llm_model, key_env=key_env, timeout=timeout)
        llm.check_reachable()
    elif tiny and llm_spec is None:
        llm = tiny_instruction_model(seed)
        llm.model.to(context.device)
    else:
        spec = check_model_spec(llm_spec or DEFAULT_LLM, "llm", "a transformers causal language model", "lms")
        llm = LocalInstructionModel.from_pretrained(spec, context.device, dtype)
    return InstructionWriter(captioner, llm, _cache(options, context, tiny))


@register_editor("lms", paper_row="LMS", options=LMS_OPTIONS)
def _lms(options: dict, context: MethodContext) -> Editor:
    """Large Model Series. Options: ip2p's (weights, seed, model, dtype, size, num_inference_steps,
    guidance_scale, image_guidance_scale, batch_size), captioner (BLIP folder or hub id), llm (causal LM folder
    or hub id) or llm_url + llm_model + llm_key_env + llm_timeout (OpenAI-compatible endpoint), cache."""
    opts = dict(options)
    tiny, seed = opts.get("weights") == "tiny", int(opts.get("seed", 0))
    writer = writer_from_options(opts, context, tiny, seed)  # first: an unreachable endpoint fails before loading
    pipe, name, kwargs = ip2p_settings(opts, context, "lms")
    return LmsEditor(pipe, name, writer, **kwargs)


@register_editor("lms+critic", options={**LMS_OPTIONS, **CRITIC_LOOP_OPTIONS}, paths=PREDICTOR_PATH)
def _lms_critic(options: dict, context: MethodContext) -> Editor:
    """LMS repeated in the paper's critic loop: lms's options plus predictor and the critic's."""
    return with_critic(_lms, options, context)
