"""The "LMS" baseline: BLIP caption -> the paper's prompt -> language-model instruction -> Ip2p, cached."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
from PIL import Image

from emoeditor.constants import EMOTIONS
from emoeditor.editors.discovery import parse_method
from emoeditor.editors.lms import LmsEditor
from emoeditor.editors.registry import MethodContext
from emoeditor.errors import MethodError
from emoeditor.models.language import (
    HttpInstructionModel,
    LanguageModelError,
    first_instruction,
    image_digest,
    lms_prompt,
)

STEPS = 2
TINY = f"lms:weights=tiny,num_inference_steps={STEPS},batch_size=2"


def _gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _images(n=2, seed=0):
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _onehot(*names):
    return torch.eye(8)[[EMOTIONS.index(n) for n in names]]


class Counting:
    """A captioner or language model that counts its calls (and can be told what to answer)."""

    def __init__(self, inner, answer=None):
        self.inner, self.name, self.answer, self.calls = inner, inner.name, answer, 0

    def __call__(self, arg):
        self.calls += 1
        return self.inner(arg) if self.answer is None else self.answer


def _build(spec, **counting) -> LmsEditor:
    editor = parse_method(spec).build(MethodContext())
    editor.writer.captioner = Counting(editor.writer.captioner, counting.get("caption"))
    editor.writer.llm = Counting(editor.writer.llm, counting.get("response"))
    return editor


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prompt_is_the_papers_template():
    assert lms_prompt("a dog running on a beach", "excitement") == (
        "There is an image with a dog running on a beach. To make me feel excitement, how to change the image? "
        "Give one instruction that starts with an action.")


@pytest.mark.parametrize("answer, instruction", [
    ("Add fireworks to the sky. This evokes excitement.", "Add fireworks to the sky."),
    ("\n1. Instruction: \"Make the sky stormy\"\n2. Darken it", "Make the sky stormy"),
    ("- Paint the walls red!\nThen ...", "Paint the walls red!"),
    ("  \n \n", ""),
])
def test_first_instruction(answer, instruction):
    assert first_instruction(answer) == instruction


def test_end_to_end_and_trace(tmp_path):
    editor = _build(f"{TINY},cache={tmp_path / 'cache.jsonl'}")
    x, targets = _images(2), _onehot("awe", "disgust")
    out = editor(x, targets, _gens(1, 2))
    assert out.images.shape == x.shape and 0 <= out.images.min() and out.images.max() <= 1
    pipe = editor.pipe
    for i, word in enumerate(["awe", "disgust"]):
        trace = out.traces[i]
        assert trace["caption"] and trace["instruction"] and trace["target_emotion"] == word
        assert trace["prompt"] == lms_prompt(trace["caption"], word)
        assert trace["instruction"] == first_instruction(trace["response"])
        assert trace["image_sha256"] == image_digest(x[i])
        assert (trace["captioner"], trace["llm"]) == ("tiny-blip-seed0", "tiny-gpt2-seed0")
        # the edit is the stock Ip2p following that instruction (padded to the batch size of 2)
        ref = pipe(prompt=[trace["instruction"]] * 2, image=torch.cat([x[i:i + 1]] * 2), num_inference_steps=STEPS,
                   generator=_gens(i + 1, 0), output_type="pt").images[0]
        assert torch.equal(out.images[i], ref.clamp(0, 1))


def test_cache_prevents_a_second_call(tmp_path):
    cache = tmp_path / "lms" / "cache.jsonl"
    editor = _build(f"{TINY},cache={cache}")
    x = _images(1, seed=4).expand(2, -1, -1, -1)  # one source, two targets
    targets = _onehot("amusement", "sadness")
    first = editor(x, targets, _gens(1, 2))
    assert (editor.writer.captioner.calls, editor.writer.llm.calls) == (1, 2)
    again = editor(x, targets, _gens(5, 6))  # another seed: nothing is asked again
    assert (editor.writer.captioner.calls, editor.writer.llm.calls) == (1, 2)
    assert len(cache.read_text().splitlines()) == 3  # one caption, two instructions
    fresh = _build(f"{TINY},cache={cache}")  # a rerun reads them from disk
    rerun = fresh(x, targets, _gens(1, 2))
    assert (fresh.writer.captioner.calls, fresh.writer.llm.calls) == (0, 0)
    assert torch.equal(rerun.images, first.images)
    assert [t["instruction"] for t in rerun.traces] == [t["instruction"] for t in again.traces]
    third = _build(f"{TINY},cache={cache}")
    third(x[:1], _onehot("fear"), _gens(1))  # a new target needs only its instruction
    assert (third.writer.captioner.calls, third.writer.llm.calls) == (0, 1)


def test_torn_cache_line_is_regenerated(tmp_path):
    cache = tmp_path / "cache.jsonl"
    editor = _build(f"{TINY},cache={cache}")
    x = _images(1, seed=6)
    editor(x, _onehot("awe"), _gens(0))
    lines = cache.read_text().splitlines()
    cache.write_text(lines[0] + "\n" + lines[1][:20])  # killed mid-write
    again = _build(f"{TINY},cache={cache}")
    again(x, _onehot("awe"), _gens(0))
    assert (again.writer.captioner.calls, again.writer.llm.calls) == (0, 1)


def test_row_is_deterministic_alone_or_in_a_mixed_batch():
    editor = parse_method(f"{TINY},cache=none").build(MethodContext())
    x, targets = _images(2, seed=8), _onehot("contentment", "anger")
    batch = editor(x, targets, _gens(3, 4))
    for i in range(2):
        alone = editor(x[i:i + 1], targets[i:i + 1], _gens(3 + i))
        assert torch.equal(alone.images[0], batch.images[i])
        assert alone.traces[0]["instruction"] == batch.traces[i]["instruction"]


def test_empty_caption_names_the_job():
    editor = _build(f"{TINY},cache=none", caption="  ")
    with pytest.raises(LanguageModelError, match=r"lms row 0 \(image sha256 \w+, target awe\).*empty caption"):
        editor(_images(2), _onehot("awe", "fear"), _gens(0, 1))


def test_empty_instruction_names_the_job():
    editor = _build(f"{TINY},cache=none", response="\n  \n")
    with pytest.raises(LanguageModelError, match=r"lms row 0 .*target awe.*no instruction"):
        editor(_images(1), _onehot("awe"), _gens(0))


def test_unreachable_endpoint_names_the_url():
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(MethodError, match=f"{url}/chat/completions is unreachable.*llm_url"):
        parse_method(f"{TINY},llm_url={url},llm_model=gpt-3").build(MethodContext())
    with pytest.raises(LanguageModelError, match="unreachable"):
        HttpInstructionModel(url, "gpt-3", timeout=5)("prompt")


def test_http_endpoint_request(monkeypatch):
    """POST /v1/chat/completions with the prompt, temperature 0 and the key from the named variable."""
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            seen["path"], seen["auth"] = self.path, self.headers.get("Authorization")
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = json.dumps({"choices": [{"message": {"content": "Add a rainbow. It is joyful."}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MY_KEY", "secret")
        url = f"http://127.0.0.1:{server.server_address[1]}"
        editor = _build(f"{TINY},llm_url={url},llm_model=m1,llm_key_env=MY_KEY,cache=none")
        out = editor(_images(1), _onehot("amusement"), _gens(0))
    finally:
        server.shutdown()
        server.server_close()
    assert seen["path"] == "/v1/chat/completions" and seen["auth"] == "Bearer secret"
    assert seen["body"]["model"] == "m1" and seen["body"]["temperature"] == 0
    assert seen["body"]["messages"] == [{"role": "user", "content": out.traces[0]["prompt"]}]
    assert out.traces[0]["instruction"] == "Add a rainbow." and out.traces[0]["llm"].startswith("m1@")


def test_missing_model_folders_are_named(tmp_path):
    for option in ("captioner", "llm", "model"):
        missing = tmp_path / f"no_{option}"
        with pytest.raises(MethodError, match=f"option {option}.*no_{option}"):
            parse_method(f"{TINY},{option}={missing}").build(MethodContext())
    with pytest.raises(MethodError, match="llm_model"):
        parse_method(f"{TINY},llm_url=http://127.0.0.1:1").build(MethodContext())


def test_lms_in_the_critic_loop_writes_one_instruction_per_job(tiny_predictor_dir):
    spec = (f"lms+critic:weights=tiny,num_inference_steps={STEPS},num_loop=2,batch_size=2,confidence=0.99,"
            f"cache=none,predictor={tiny_predictor_dir}")
    loop = parse_method(spec).build(MethodContext())
    writer = loop.editor.writer
    writer.captioner, writer.llm = Counting(writer.captioner), Counting(writer.llm)
    out = loop(_images(2, seed=9), _onehot("excitement", "sadness"), _gens(1, 2))
    assert [len(t["iterations"]) for t in out.traces] == [2, 2]
    assert (writer.captioner.calls, writer.llm.calls) == (2, 2)  # from the sources, once per job
    assert [t["edit"]["target_emotion"] for t in out.traces] == ["excitement", "sadness"]
    assert all(t["edit"]["instruction"] for t in out.traces)


def test_loads_local_folders_and_uses_the_chat_template(tmp_path):
    """captioner=/llm= folders load through from_pretrained; a chat model is prompted through its template."""
    from emoeditor.models.language import tiny_captioner, tiny_instruction_model

    blip, lm = tiny_captioner(1), tiny_instruction_model(1)
    blip.model.save_pretrained(tmp_path / "blip")
    blip.image_processor.save_pretrained(tmp_path / "blip")  # a BLIP folder's processor files, as released
    blip.tokenizer.save_pretrained(tmp_path / "blip")
    lm.tokenizer.chat_template = ("{% for m in messages %}[BOS] {{ m['content'] }} [EOS]{% endfor %}"
                                  "{% if add_generation_prompt %} add{% endif %}")
    lm.model.save_pretrained(tmp_path / "lm")
    lm.tokenizer.save_pretrained(tmp_path / "lm")
    editor = _build(f"{TINY},captioner={tmp_path / 'blip'},llm={tmp_path / 'lm'},cache=none")
    trace = editor(_images(1), _onehot("awe"), _gens(0)).traces[0]
    assert (trace["captioner"], trace["llm"]) == (str(tmp_path / "blip"), str(tmp_path / "lm"))
    photo = Image.fromarray((_images(1)[0].permute(1, 2, 0) * 255).to(torch.uint8).numpy())
    pixels = blip.image_processor(images=photo, return_tensors="pt").pixel_values
    caption_ids = blip.model.generate(pixel_values=pixels, do_sample=False, max_new_tokens=30)
    assert trace["caption"] == blip.tokenizer.decode(caption_ids[0], skip_special_tokens=True).strip()
    # the folder's model, prompted by hand through the template (the saved generation config may differ
    # from the in-memory one between transformers versions, so the reference loads it too)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "lm")
    text = f"[BOS] {trace['prompt']} [EOS] add"
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    answer = model.generate(**enc, do_sample=False, max_new_tokens=64, pad_token_id=tokenizer.pad_token_id)
    response = tokenizer.decode(answer[0, enc.input_ids.shape[1]:], skip_special_tokens=True).strip()
    assert trace["response"] == response
