"""CLIPstyler (Kwon & Ye, CVPR 2022), Table 1's "Csty": a small U-Net optimised per image so that its output
moves, in CLIP space, from the text "a Photo" toward a one-word prompt (the target emotion, paper Sec. 4).

Facts from the official release (github.com/cyclomon/CLIPstyler, train_CLIPstyler.py, StyleNet.py, template.py):

- StyleNet: the release's ``UNet(ngf=16)``; its PyTorch-default initialisation is drawn here from the row's
  generator, so a row's result does not depend on its batch.
- Texts: the prompt and the source "a Photo" each put into the 79 ImageNet templates, CLIP-encoded, averaged and
  normalised; the text direction is their normalised difference.
- Losses, one update per step for `steps` updates, then the output: lambda_dir x directional CLIP loss of the
  whole image (bicubic to CLIP's input size), lambda_patch x the same loss on `num_crops` random crops of
  `crop_size` px, each warped by a random perspective (distortion 0.5, fill 0) and resized to CLIP's input, with
  patches whose loss is below `thresh` zeroed; lambda_c x the MSE of VGG19 features at torchvision's
  ``features`` indices 21 and 31 (the release calls them conv4_2/conv5_2; index 31 is after the ReLU, so in
  emoeditor.models.vgg's names conv4_2 and relu5_2); lambda_tv x the sum of the L2 norms of four neighbour
  differences. Adam, lr halved every 100 updates (the release's StepLR, stepped before each update).
- The image is resized to `size` x `size` (the release's 512) and the output back to the input size; the
  release's saved image is clamped, contrast 1.5 (torchvision's adjust_contrast) and min-max stretched
  (``save_image(normalize=True)``): ``postprocess=release`` (default) does the same, ``none`` returns the net's
  output.

Every random draw (StyleNet weights, crop offsets, perspective corners) comes from the row's generator.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from emoeditor.constants import EMOTIONS, TEXT_SEQ_LEN
from emoeditor.editors.base import Editor, EditResult
from emoeditor.editors.registry import (
    MethodContext,
    choice,
    multiple_of_8,
    non_negative,
    positive_int,
    register_editor,
)
from emoeditor.errors import MethodError
from emoeditor.fileio import missing_path
from emoeditor.models.components import looks_like_hub_id, seeded_init
from emoeditor.models.tiny import save_tiny_tokenizer
from emoeditor.models.vgg import VGGFeatures, load_vgg19, tiny_vgg19

CLIP_HUB_ID = "openai/clip-vit-base-patch32"  # the release's ViT-B/32
SOURCE_TEXT = "a Photo"
CONTENT_LAYERS = ("conv4_2", "relu5_2")  # torchvision vgg19.features[21] and [31]
STYLENET_WIDTH = 16  # the release's UNet(ngf=16)
PERSPECTIVE_DISTORTION = 0.5
LR_STEP, LR_GAMMA = 100, 0.5  # the release's StepLR
CONTRAST = 1.5  # the release's adjust_contrast before saving
RELEASE_DEFAULTS = dict(steps=200, lr=5e-4, size=512, crop_size=128, num_crops=64, thresh=0.7,
                        lambda_tv=2e-3, lambda_patch=9000.0, lambda_dir=500.0, lambda_c=150.0)
# weights=tiny is a smoke test on 64 px images (the tiny evaluation); explicit options still win
TINY_DEFAULTS = dict(steps=10, size=64, crop_size=32, num_crops=4)

# The 79 ImageNet prompt templates the release averages every text over (its template.py).
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)


# -- StyleNet ------------------------------------------------------------------------------------------------


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.InstanceNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, 1, 1), nn.InstanceNorm2d(cout), nn.ReLU())


class _Residual(nn.Module):
    """Two 3x3 conv-IN-ReLU layers plus a 1x1 skip (the release's EncodingBlock)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _double_conv(cin, cout)
        self.skip = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.skip(x)


class _Down(_Residual):
    """A residual block, then a strided 4x4 conv halving the size; returns (downsampled, skip features)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout)
        self.downsample = nn.Conv2d(cout, cout, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = super().forward(x)
        return self.downsample(features), features


class _Up(nn.Module):
    """Bilinear x2 upsampling, concatenation with the skip features, a residual block."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear")
        self.block = _Residual(cin + cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.upsample(x), skip], dim=1))


class StyleNet(nn.Module):
    """CLIPstyler's U-Net: three residual down/up levels with skips; sigmoid output in [0, 1]."""

    def __init__(self, width: int = STYLENET_WIDTH):
        super().__init__()
        self.conv_init = nn.Conv2d(3, width, 1, 1, 0)
        self.init = _Residual(width, width)
        self.down1 = _Down(width, width)
        self.down2 = _Down(width, 2 * width)
        self.down3 = _Down(2 * width, 4 * width)
        self.encoding = _Residual(4 * width, 8 * width)
        self.up3 = _Up(8 * width, 4 * width)
        self.up2 = _Up(4 * width, 2 * width)
        self.up1 = _Up(2 * width, width)
        self.out = _Residual(2 * width, width)
        self.conv_fin = nn.Conv2d(width, 3, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.init(self.conv_init(x))
        d1, f1 = self.down1(x)
        d2, f2 = self.down2(d1)
        d3, f3 = self.down3(d2)
        h = self.up1(self.up2(self.up3(self.encoding(d3), f3), f2), f1)
        return torch.sigmoid(self.conv_fin(self.out(torch.cat([h, x], dim=1))))


def init_stylenet(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default Conv2d initialisation (weight and bias ~ U(+-1/sqrt(fan_in))), drawn from `generator`."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            for param in (module.weight, module.bias):
                draw = torch.empty(param.shape, device=generator.device).uniform_(-bound, bound, generator=generator)
                with torch.no_grad():
                    param.copy_(draw)
    return net


# -- augmentation and losses -----------------------------------------------------------------------------------


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    return int(torch.randint(low, high, (1,), generator=generator, device=generator.device).item())


def perspective_endpoints(width: int, height: int, distortion: float,
                          generator: torch.Generator) -> list[list[int]]:
    """torchvision RandomPerspective.get_params's corners (TL, TR, BR, BL), drawn from `generator`."""
    dx, dy = int(distortion * (width // 2)), int(distortion * (height // 2))
    left, right = (0, dx + 1), (width - dx - 1, width)
    top, bottom = (0, dy + 1), (height - dy - 1, height)
    corners = ((left, top), (right, top), (right, bottom), (left, bottom))
    return [[_randint(*xs, generator), _randint(*ys, generator)] for xs, ys in corners]


def random_patches(image: torch.Tensor, generator: torch.Generator, crop_size: int, num_crops: int,
                   out_size: int, distortion: float = PERSPECTIVE_DISTORTION) -> torch.Tensor:
    """(num_crops, 3, out_size, out_size): RandomCrop(crop_size), RandomPerspective(distortion, fill=0, p=1),
    Resize(out_size) of a (1, 3, H, W) image, as the release's patch augmentation, with explicit draws."""
    _, _, height, width = image.shape
    start = [[0, 0], [crop_size - 1, 0], [crop_size - 1, crop_size - 1], [0, crop_size - 1]]
    patches = []
    for _ in range(num_crops):
        top, left = _randint(0, height - crop_size + 1, generator), _randint(0, width - crop_size + 1, generator)
        crop = image[:, :, top:top + crop_size, left:left + crop_size]
        end = perspective_endpoints(crop_size, crop_size, distortion, generator)
        warped = TF.perspective(crop, start, end, TF.InterpolationMode.BILINEAR, fill=[0.0] * image.shape[1])
        patches.append(F.interpolate(warped, size=(out_size, out_size), mode="bilinear", align_corners=False))
    return torch.cat(patches)


def directional_loss(image_features: torch.Tensor, source_features: torch.Tensor,
                     text_direction: torch.Tensor) -> torch.Tensor:
    """Per row, 1 - cos(normalised (E_I(out)/|E_I(out)| - E_I(src)/|E_I(src)|), text direction)."""
    direction = F.normalize(image_features, dim=-1) - F.normalize(source_features, dim=-1)
    return 1 - F.cosine_similarity(F.normalize(direction, dim=-1), text_direction.expand_as(direction), dim=-1)


def thresholded_mean(losses: torch.Tensor, thresh: float) -> torch.Tensor:
    """The release's patch rejection: patches whose loss is below `thresh` count as 0 in the mean."""
    return torch.where(losses < thresh, torch.zeros_like(losses), losses).mean()


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Sum of the L2 norms of horizontal, vertical and both diagonal neighbour differences."""
    return (torch.norm(image[:, :, :, :-1] - image[:, :, :, 1:]) + torch.norm(image[:, :, :-1, :] - image[:, :, 1:, :])
            + torch.norm(image[:, :, 1:, :-1] - image[:, :, :-1, 1:])
            + torch.norm(image[:, :, :-1, :-1] - image[:, :, 1:, 1:]))


def release_postprocess(image: torch.Tensor) -> torch.Tensor:
    """What the release saves: clamp, contrast 1.5, then save_image(normalize=True)'s min-max stretch."""
    image = TF.adjust_contrast(image.clamp(0, 1), CONTRAST)
    low, high = image.min(), image.max()
    return (image - low) / torch.clamp(high - low, min=1e-5)


# -- the editor ------------------------------------------------------------------------------------------------


class CLIPStylerEditor(Editor):
    """One StyleNet optimised per row toward "<target emotion>" (texts averaged over the ImageNet templates)."""

    name = "clipstyler"

    def __init__(self, clip: CLIPModel, tokenizer, vgg: VGGFeatures, steps: int = 200, lr: float = 5e-4,
                 size: int = 512, crop_size: int = 128, num_crops: int = 64, thresh: float = 0.7,
                 lambda_tv: float = 2e-3, lambda_patch: float = 9000.0, lambda_dir: float = 500.0,
                 lambda_c: float = 150.0, source_text: str = SOURCE_TEXT, postprocess: str = "release",
                 device: str | torch.device = "cpu"):
        if size % 8:
            raise MethodError(f"clipstyler: size={size} must be a multiple of 8 (StyleNet halves it three times)")
        if not 0 < crop_size <= size:
            raise MethodError(f"clipstyler: crop_size={crop_size} must be between 1 and size={size}")
        self.device = torch.device(device)
        self.clip = clip.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.vgg = vgg.to(self.device).eval().requires_grad_(False)
        self.clip_size = int(clip.config.vision_config.image_size)
        self.clip_mean = torch.tensor(OPENAI_CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        self.clip_std = torch.tensor(OPENAI_CLIP_STD, device=self.device).view(1, 3, 1, 1)
        self.settings = dict(steps=steps, lr=lr, size=size, crop_size=crop_size, num_crops=num_crops, thresh=thresh,
                             lambda_tv=lambda_tv, lambda_patch=lambda_patch, lambda_dir=lambda_dir,
                             lambda_c=lambda_c)
        self.source_text = source_text
        self.postprocess = postprocess
        self._text_features: dict[str, torch.Tensor] = {}

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings of [0, 1] images already at CLIP's input size."""
        pixels = (images - self.clip_mean) / self.clip_std
        return self.clip.visual_projection(self.clip.vision_model(pixel_values=pixels).pooler_output)

    def _global_features(self, images: torch.Tensor) -> torch.Tensor:
        """The release's clip_normalize: bicubic to CLIP's input size, then the CLIP embedding."""
        size = (self.clip_size, self.clip_size)
        return self.encode_images(F.interpolate(images, size=size, mode="bicubic", align_corners=False))

    @torch.no_grad()
    def text_features(self, text: str) -> torch.Tensor:
        """(1, D): the release's text embedding, the mean over the templates' embeddings, normalised."""
        if text not in self._text_features:
            tokens = self.tokenizer([t.format(text) for t in IMAGENET_TEMPLATES], padding=True, truncation=True,
                                    max_length=TEXT_SEQ_LEN, return_tensors="pt").to(self.device)
            pooled = self.clip.text_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
            features = self.clip.text_projection(pooled.pooler_output).mean(dim=0, keepdim=True)
            self._text_features[text] = F.normalize(features, dim=-1)
        return self._text_features[text]

    def text_direction(self, text: str) -> torch.Tensor:
        return F.normalize(self.text_features(text) - self.text_features(self.source_text), dim=-1)

    def _losses(self, output: torch.Tensor, content_features: dict, source_features: torch.Tensor,
                text_direction: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        s = self.settings
        features = self.vgg(output, CONTENT_LAYERS)
        content = sum(F.mse_loss(features[k], content_features[k]) for k in CONTENT_LAYERS)
        patches = random_patches(output, generator, s["crop_size"], s["num_crops"], self.clip_size)
        per_patch = directional_loss(self.encode_images(patches), source_features, text_direction)
        patch = thresholded_mean(per_patch, s["thresh"])
        glob = directional_loss(self._global_features(output), source_features, text_direction).mean()
        tv = tv_loss(output)
        total = (s["lambda_patch"] * patch + s["lambda_c"] * content + s["lambda_tv"] * tv
                 + s["lambda_dir"] * glob)
        return dict(total=total, content=content, patch=patch, dir=glob, tv=tv,
                    patches_kept=(per_patch >= s["thresh"]).sum())

    def stylise(self, image: torch.Tensor, text: str, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """One (1, 3, H, W) image at `size` x `size`: the StyleNet output after `steps` updates, and its trace."""
        s = self.settings
        content = F.interpolate(image, size=(s["size"], s["size"]), mode="bicubic", antialias=True,
                                align_corners=False).clamp(0, 1)
        net = init_stylenet(StyleNet(), generator).to(self.device)
        optimizer = torch.optim.Adam(net.parameters(), lr=s["lr"])
        direction = self.text_direction(text)
        with torch.no_grad():
            content_features = self.vgg(content, CONTENT_LAYERS)
            source_features = self._global_features(content)
        record = {}
        for step in range(s["steps"] + 1):  # the last pass only evaluates the returned image
            last = step == s["steps"]
            with torch.set_grad_enabled(not last):
                output = net(content)
                losses = self._losses(output, content_features, source_features, direction, generator)
            if step == 0 or last:
                record["first" if step == 0 else "last"] = {k: float(v.detach()) for k, v in losses.items()}
            if last:
                break
            for group in optimizer.param_groups:
                group["lr"] = s["lr"] * LR_GAMMA ** ((step + 1) // LR_STEP)
            optimizer.zero_grad()
            losses["total"].backward()
            optimizer.step()
        output = output.detach()
        if self.postprocess == "release":
            output = release_postprocess(output)
        return output, {"losses_first": record["first"], "losses_last": record["last"]}

    def edit(self, images: torch.Tensor, targets: torch.Tensor,
             generators: Sequence[torch.Generator]) -> EditResult:
        outputs, traces = [], []
        for image, target, generator in zip(images, targets, generators):
            text = EMOTIONS[int(target.argmax())]
            with torch.enable_grad():
                styled, losses = self.stylise(image[None].to(self.device, torch.float32), text, generator)
            outputs.append(F.interpolate(styled, size=image.shape[-2:], mode="bicubic", antialias=True,
                                         align_corners=False).clamp(0, 1).to(images.device))
            traces.append({"method": "clipstyler", "text": text, "source_text": self.source_text,
                           "target": [float(v) for v in target], "clip_input_size": self.clip_size,
                           "content_layers": list(CONTENT_LAYERS), "postprocess": self.postprocess,
                           **self.settings, **losses})
        return EditResult(images=torch.cat(outputs), traces=traces)


# -- components ------------------------------------------------------------------------------------------------


def tiny_clip(seed: int = 0) -> tuple[CLIPModel, CLIPTokenizer]:
    """A random-weight CLIP (32 px images, 32-d towers) with emoeditor's character-level CLIP tokenizer."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = save_tiny_tokenizer(folder)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=TEXT_SEQ_LEN, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4)
    with seeded_init(seed + 5):
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    return model.eval(), tokenizer


def load_clip(source: str) -> tuple[CLIPModel, CLIPTokenizer]:
    """CLIPModel + CLIPTokenizer from a local folder, or a hub id (needs network or the hub cache)."""
    what = ("a CLIP ViT-B/32 in the transformers layout (config.json, weights, tokenizer files), e.g. "
            f"a local copy of {CLIP_HUB_ID}: clipstyler:clip=<folder>, or clipstyler:weights=tiny to test")
    if not Path(source).exists() and not looks_like_hub_id(source):
        raise MethodError(f"{missing_path(source, 'option clip: the CLIP folder')}; pass {what}")
    try:
        return CLIPModel.from_pretrained(source).float().eval(), CLIPTokenizer.from_pretrained(source)
    except OSError as exc:
        where = "the folder" if Path(source).exists() else "no such folder, and the hub id"
        raise MethodError(f"option clip={source!r}: {where} could not be loaded ({str(exc).splitlines()[0]}); "
                          f"pass {what}") from None


def _vgg(source: Optional[str], device: torch.device) -> VGGFeatures:
    try:
        return load_vgg19(source, device)
    except MethodError as exc:
        raise MethodError(f"clipstyler option vgg: {exc}") from None


def _threshold(value: str) -> float:
    if not 0 <= float(value) <= 2:
        raise ValueError("a 1 - cosine threshold lies in [0, 2]")
    return float(value)


OPTIONS = {"clip": str, "vgg": str, "weights": choice("tiny"), "steps": positive_int, "lr": non_negative,
           "size": multiple_of_8, "crop_size": positive_int, "num_crops": positive_int, "thresh": _threshold,
           "lambda_tv": non_negative, "lambda_patch": non_negative, "lambda_dir": non_negative,
           "lambda_c": non_negative, "source_text": str, "postprocess": choice("release", "none")}


@register_editor("clipstyler", paper_row="Csty", options=OPTIONS)
def _clipstyler(options: dict, context: MethodContext) -> Editor:
    """CLIPstyler with the release's defaults. Options: clip (folder or hub id, default openai/clip-vit-base-patch32),
    vgg (torchvision's VGG19 file; default torchvision's download), weights=tiny (random tiny CLIP and VGG and a
    64 px smoke schedule), steps, lr, size, crop_size, num_crops, thresh, lambda_tv, lambda_patch, lambda_dir,
    lambda_c, source_text, postprocess (release|none)."""
    opts = dict(options)
    tiny = opts.pop("weights", None) == "tiny"
    clip_source, vgg_source = opts.pop("clip", None), opts.pop("vgg", None)
    if tiny and (clip_source or vgg_source):
        raise MethodError("clipstyler: weights=tiny builds its own CLIP and VGG; drop clip=/vgg= or weights=tiny")
    settings = {**RELEASE_DEFAULTS, **(TINY_DEFAULTS if tiny else {})}
    for key, value in opts.items():
        settings[key] = OPTIONS[key](value)
    if tiny:
        clip, tokenizer = tiny_clip()
        vgg = tiny_vgg19()
    else:
        clip, tokenizer = load_clip(clip_source or CLIP_HUB_ID)
        vgg = _vgg(vgg_source, context.device)
    return CLIPStylerEditor(clip, tokenizer, vgg, device=context.device, **settings)
