"""The language side of the "Large Model Series" baseline (paper Supp. S2.3): caption, then instruction.

BLIP captions the source; a language model answers the paper's prompt (`PROMPT_TEMPLATE`, verbatim) with an
editing instruction that InstructPix2Pix then follows. The paper queried GPT-3, which is gone; the model is
any local transformers causal LM (greedy, so a rerun gives the same text) or any OpenAI-compatible HTTP
endpoint (temperature 0). Both steps are cached on disk per (image content, target, model), so another
seed, a resumed evaluation or the critic loop's repeated edits never ask a model twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

import torch
from PIL import Image

from emoeditor.errors import MethodError
from emoeditor.imageio import to_uint8
from emoeditor.models.components import dtype_kwargs, looks_like_hub_id, seeded_init

PROMPT_TEMPLATE = ("There is an image with {caption}. To make me feel {target}, how to change the image? "
                   "Give one instruction that starts with an action.")
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"
DEFAULT_LLM = "Qwen/Qwen2.5-0.5B-Instruct"  # a small open instruction model with a chat template
CAPTION_MAX_TOKENS = 30
INSTRUCTION_MAX_TOKENS = 64
HTTP_TIMEOUT_S = 60.0


class LanguageModelError(MethodError):
    """A captioner or language model that cannot be reached, or whose answer cannot be used."""


def lms_prompt(caption: str, target: str) -> str:
    """The paper's query (Supp. S2.3) for one caption and target emotion word."""
    return PROMPT_TEMPLATE.format(caption=caption, target=target)


def image_digest(image: torch.Tensor) -> str:
    """sha256 of a [0, 1] (3, H, W) image's uint8 pixels and shape: the cache key of its caption."""
    pixels = to_uint8(image)
    return hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()


_BULLET = re.compile(r"^\s*(?:[-*•]+|\d+[.)])\s*")
_LABEL = re.compile(r"^\s*(?:instruction|answer)\s*:\s*", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def first_instruction(text: str) -> str:
    """The first sentence of the first non-empty line, without list markers, labels or quotes:
    chat models often add an explanation after the one instruction the prompt asks for."""
    for line in text.strip().splitlines():
        line = _LABEL.sub("", _BULLET.sub("", line)).strip().strip("\"'`*").strip()
        if line:
            return _SENTENCE_END.split(line, maxsplit=1)[0].strip()
    return ""


def _load_error(option: str, spec: str, what: str, exc: Exception) -> LanguageModelError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return LanguageModelError(f"lms option {option}={spec!r}: cannot load {what} ({reason}). Pass a local folder "
                              f"holding it (e.g. `huggingface-cli download {spec} --local-dir <folder>` on a "
                              f"machine with network, then {option}=<folder>)")


def _local_kwargs(spec: str) -> dict:
    return {} if looks_like_hub_id(spec) else {"local_files_only": True}


class BlipCaptioner:
    """BLIP image captioning (unconditional, greedy), one image at a time."""

    def __init__(self, model, image_processor, tokenizer, name: str, generate_kwargs: Optional[dict] = None):
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.name = name
        self.generate_kwargs = {"max_new_tokens": CAPTION_MAX_TOKENS, **(generate_kwargs or {})}

    @classmethod
    def from_pretrained(cls, spec: str, device: torch.device | str = "cpu",
                        dtype: Optional[torch.dtype] = None) -> "BlipCaptioner":
        from transformers import BlipForConditionalGeneration, BlipProcessor

        try:
            processor = BlipProcessor.from_pretrained(spec, **_local_kwargs(spec))
            model = BlipForConditionalGeneration.from_pretrained(
                spec, **_local_kwargs(spec), **dtype_kwargs(dtype, "transformers"))
        except (OSError, ValueError) as exc:
            raise _load_error("captioner", spec, "a BLIP captioning model", exc) from None
        return cls(model.to(device), processor.image_processor, processor.tokenizer, name=spec)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> str:
        pil = Image.fromarray(to_uint8(image))
        pixels = self.image_processor(images=pil, return_tensors="pt").pixel_values
        pixels = pixels.to(self.model.device, self.model.dtype)
        ids = self.model.generate(pixel_values=pixels, do_sample=False, num_beams=1, **self.generate_kwargs)
        return self.tokenizer.decode(ids[0], skip_special_tokens=True).strip()


class LocalInstructionModel:
    """A transformers causal LM answering one prompt, greedy; through its chat template when it has one."""

    def __init__(self, model, tokenizer, name: str, generate_kwargs: Optional[dict] = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.generate_kwargs = {"max_new_tokens": INSTRUCTION_MAX_TOKENS, **(generate_kwargs or {})}

    @classmethod
    def from_pretrained(cls, spec: str, device: torch.device | str = "cpu",
                        dtype: Optional[torch.dtype] = None) -> "LocalInstructionModel":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(spec, **_local_kwargs(spec))
            model = AutoModelForCausalLM.from_pretrained(spec, **_local_kwargs(spec),
                                                         **dtype_kwargs(dtype, "transformers"))
        except (OSError, ValueError) as exc:
            raise _load_error("llm", spec, "a causal language model", exc) from None
        return cls(model.to(device), tokenizer, name=spec)

    @torch.no_grad()
    def __call__(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                        add_generation_prompt=True)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids = self.model.generate(**inputs, do_sample=False, num_beams=1, pad_token_id=pad, **self.generate_kwargs)
        return self.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def chat_completions_url(url: str) -> str:
    """http://host:port, .../v1 or the full .../v1/chat/completions, as the endpoint to POST to."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")


class HttpInstructionModel:
    """An OpenAI-compatible chat endpoint (the paper used GPT-3), temperature 0, standard library only."""

    def __init__(self, url: str, model: str, key_env: str = "OPENAI_API_KEY", timeout: float = HTTP_TIMEOUT_S,
                 max_tokens: int = INSTRUCTION_MAX_TOKENS):
        self.url = chat_completions_url(url)
        self.model = model
        self.key_env = key_env
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.name = f"{model}@{self.url}"

    def _unreachable(self, reason) -> LanguageModelError:
        return LanguageModelError(
            f"the LLM endpoint {self.url} is unreachable ({reason}). Start the server, fix lms:llm_url=<url>, or "
            f"drop llm_url to use a local model (lms:llm=<folder of a transformers causal LM>)")

    def check_reachable(self) -> None:
        """Open (and close) a TCP connection, so a wrong URL fails before any image is edited."""
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LanguageModelError(f"lms:llm_url={self.url!r} is not an http(s) URL; pass e.g. "
                                     f"llm_url=http://127.0.0.1:8000/v1")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=min(self.timeout, 10.0)).close()
        except OSError as exc:
            raise self._unreachable(exc) from None

    def __call__(self, prompt: str) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                "max_tokens": self.max_tokens}
        headers = {"Content-Type": "application/json"}
        if os.environ.get(self.key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.key_env]}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read().decode())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise LanguageModelError(f"the LLM endpoint {self.url} answered HTTP {exc.code} ({detail}); check "
                                     f"llm_model={self.model!r} and the API key in ${self.key_env}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise self._unreachable(getattr(exc, "reason", exc)) from None
        except json.JSONDecodeError as exc:
            raise LanguageModelError(f"the LLM endpoint {self.url} did not answer JSON ({exc})") from None
        try:
            return (answer["choices"][0]["message"]["content"] or "").strip()
        except (KeyError, IndexError, TypeError):
            raise LanguageModelError(f"the LLM endpoint {self.url} answered without choices[0].message.content: "
                                     f"{str(answer)[:300]}") from None


def default_cache_path() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emoeditor" / "lms" / "cache.jsonl"


class LanguageCache:
    """Captions and instructions as JSON lines {"key": ..., "value": ...}; `path` None keeps them in memory.

    Lines are appended with one write each, so processes sharing the file interleave whole lines; a torn
    last line (a killed run) is skipped on reading and its entry regenerated."""

    def __init__(self, path: Optional[str | Path] = None):
        self.path = None if path is None else Path(path)
        self.entries: dict[str, dict] = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.entries[self._key(row["key"])] = row["value"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    @staticmethod
    def _key(key: dict) -> str:
        return json.dumps(key, sort_keys=True)

    def get(self, key: dict) -> Optional[dict]:
        return self.entries.get(self._key(key))

    def put(self, key: dict, value: dict) -> None:
        self.entries[self._key(key)] = value
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"key": key, "value": value}) + "\n")


class InstructionWriter:
    """Caption (per source image) -> the paper's prompt -> instruction (per source and target), cached."""

    def __init__(self, captioner, llm, cache: Optional[LanguageCache] = None):
        self.captioner = captioner
        self.llm = llm
        self.cache = cache if cache is not None else LanguageCache()

    def caption(self, image: torch.Tensor, digest: str, job: str) -> str:
        key = {"kind": "caption", "image": digest, "captioner": self.captioner.name}
        hit = self.cache.get(key)
        if hit is not None:
            return hit["caption"]
        caption = self.captioner(image).strip()
        if not caption:
            raise LanguageModelError(f"{job}: the captioner {self.captioner.name} returned an empty caption; "
                                     f"no instruction can be written for this image (check the captioner "
                                     f"weights, or the image is blank)")
        self.cache.put(key, {"caption": caption})
        return caption

    def __call__(self, image: torch.Tensor, target: str, job: str = "image") -> dict:
        """{image_sha256, caption, prompt, response, instruction, captioner, llm} for one source and target."""
        digest = image_digest(image)
        job = f"{job} (image sha256 {digest[:12]}, target {target})"
        caption = self.caption(image, digest, job)
        prompt = lms_prompt(caption, target)
        key = {"kind": "instruction", "image": digest, "target": target, "captioner": self.captioner.name,
               "llm": self.llm.name}
        hit = self.cache.get(key)
        if hit is None or hit.get("prompt") != prompt:
            response = self.llm(prompt)
            instruction = first_instruction(response)
            if not instruction:
                raise LanguageModelError(f"{job}: the language model {self.llm.name} gave no instruction "
                                         f"(answer {response!r} to {prompt!r})")
            hit = {"prompt": prompt, "response": response, "instruction": instruction}
            self.cache.put(key, hit)
        return {"image_sha256": digest, "caption": caption, "prompt": prompt, "response": hit["response"],
                "instruction": hit["instruction"], "captioner": self.captioner.name, "llm": self.llm.name}


# --------------------------------------------------------------------------------------------- tiny

# The tiny word-level vocabulary: the prompt's own words and a few scene words, so random models say something.
TINY_WORDS = ("there is an image with to make me feel how change the give one instruction that starts action "
              "add a bright sky red dog cat tree people smile rain dark light sun flowers storm fire water old "
              "house street child face colour warm cold").split()
TINY_SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
TINY_MIN_TOKENS = 3  # random weights may pick end-of-text at once; the real models need no floor


def tiny_word_tokenizer():
    """A lower-casing word-level tokenizer built in code (no files): the tiny captioner's and LM's."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from emoeditor.constants import EMOTIONS

    words = dict.fromkeys([*TINY_SPECIALS, *TINY_WORDS, *EMOTIONS, ".", ",", "?"])
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]")


def _tiny_generate_kwargs(tokenizer) -> dict:
    """Never the padding, unknown or start token, and at least a few words: a non-empty answer."""
    return {"min_new_tokens": TINY_MIN_TOKENS, "max_new_tokens": 8,
            "suppress_tokens": [tokenizer.convert_tokens_to_ids(t) for t in TINY_SPECIALS[:3]]}


def tiny_captioner(seed: int = 0) -> BlipCaptioner:
    """A random-weight BLIP (tiny vision and text towers) with a 32px image processor."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    tokenizer = tiny_word_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in TINY_SPECIALS}
    config = BlipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32,
                         pad_token_id=ids["[PAD]"], bos_token_id=ids["[BOS]"], sep_token_id=ids["[EOS]"],
                         eos_token_id=ids["[EOS]"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=32)
    with seeded_init(seed + 10):
        model = BlipForConditionalGeneration(config)
    return BlipCaptioner(model, BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer,
                         name=f"tiny-blip-seed{seed}", generate_kwargs=_tiny_generate_kwargs(tokenizer))


def tiny_instruction_model(seed: int = 0) -> LocalInstructionModel:
    """A random-weight 2-layer GPT-2 over the tiny word vocabulary (no chat template)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_word_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    with seeded_init(seed + 11):
        model = GPT2LMHeadModel(config)
    return LocalInstructionModel(model, tokenizer, name=f"tiny-gpt2-seed{seed}",
                                 generate_kwargs=_tiny_generate_kwargs(tokenizer))
