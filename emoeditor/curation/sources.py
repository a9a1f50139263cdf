"""The curation inputs, read lazily: InstructPix2Pix pairs (per-seed folders or parquet shards) and EmoSet images.

Every item has a stable string id (the shard hash input) and loaders that return an RGB PIL image or
raise ImageLoadError naming the file or row, so a corrupt input is skipped and counted, never fatal.
Readers take a `wanted(id)` predicate checked before any image is touched: a shard's pass over a
parquet file decodes only that shard's rows, and the file is streamed by record batches.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

from PIL import Image, UnidentifiedImageError

from emoeditor.data.emoset import list_images
from emoeditor.errors import EmoEditorError, ImageLoadError
from emoeditor.fileio import missing_path
from emoeditor.imageio import MIN_SIDE, open_image, to_rgb

Loader = Callable[[], Image.Image]
Wanted = Callable[[str], bool]

PROMPT_FILE = "prompt.json"  # Ip2p per-seed layout: <prompt folder>/prompt.json, <seed>_0.jpg, <seed>_1.jpg
PROMPT_KEY = "edit"
PARQUET_COLUMNS = ("original_image", "edited_image", "edit_prompt")
PARQUET_BATCH_ROWS = 64


@dataclass(frozen=True)
class PairItem:
    """An Ip2p pair: id, edit instruction, and loaders of the source (original) and target (edited) image."""

    id: str
    prompt: str
    load_source: Loader
    load_target: Loader


@dataclass(frozen=True)
class ImageItem:
    """An EmoSet image: id (its path relative to the root), EmoSet's label and its loader."""

    id: str
    emotion: str
    load: Loader


@dataclass(frozen=True)
class Corrupt:
    """An input that cannot become an item (e.g. an unreadable prompt.json): skipped, counted and named."""

    id: str
    problem: str


Entry = Union[PairItem, ImageItem, Corrupt]


def decode_bytes(data: object, name: str) -> Image.Image:
    """Encoded image bytes (a parquet cell) as RGB, or ImageLoadError naming the row."""
    if isinstance(data, dict):  # the HF datasets Image feature: {"bytes": ..., "path": ...}
        data = data.get("bytes")
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise ImageLoadError(f"{name}: no image bytes in the cell")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"{name}: unreadable or truncated image ({exc})") from None
    if min(rgb.size) < MIN_SIDE:
        raise ImageLoadError(f"{name}: {rgb.size[0]}x{rgb.size[1]} is smaller than {MIN_SIDE}px per side")
    return rgb


class Ip2pFolders:
    """The per-seed layout of the Ip2p CLIP-filtered dataset: folders holding prompt.json and <seed>_0/1.jpg.

    Ids are '<folder relative to the root>/<seed>'. The folder is listed once (names only); prompts and
    images are read only for the items a pass wants.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise EmoEditorError(f"{missing_path(self.root, 'Ip2p per-seed folder root')}; pass the folder the "
                                 f"clip-filtered-dataset shards were unpacked into")
        self._listing: Optional[list[tuple[str, str]]] = None

    def describe(self) -> dict:
        return {"kind": "ip2p_folders", "root": str(self.root)}

    def listing(self) -> list[tuple[str, str]]:
        """(folder, seed) of every pair, sorted; a seed counts if either of its two images is there."""
        if self._listing is None:
            pairs = []
            for folder, dirs, files in os.walk(self.root):
                dirs.sort()
                if PROMPT_FILE not in files:
                    continue
                rel = Path(folder).relative_to(self.root).as_posix()
                seeds = {name.rsplit("_", 1)[0] for name in files if name.endswith(("_0.jpg", "_1.jpg"))}
                pairs += [(rel, seed) for seed in sorted(seeds)]
            self._listing = sorted(pairs)
        return self._listing

    def _prompt(self, folder: str) -> str:
        path = self.root / folder / PROMPT_FILE
        try:
            prompt = json.loads(path.read_text(encoding="utf-8")).get(PROMPT_KEY)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
            raise ImageLoadError(f"{path}: unreadable prompt file ({exc})") from None
        if not isinstance(prompt, str) or not prompt.strip():
            raise ImageLoadError(f"{path}: no non-empty {PROMPT_KEY!r} instruction")
        return prompt.strip()

    def items(self, wanted: Wanted) -> Iterator[Entry]:
        prompts: dict[str, Union[str, ImageLoadError]] = {}
        for folder, seed in self.listing():
            item_id = f"{folder}/{seed}"
            if not wanted(item_id):
                continue
            if folder not in prompts:
                try:
                    prompts[folder] = self._prompt(folder)
                except ImageLoadError as exc:
                    prompts[folder] = exc
            prompt = prompts[folder]
            if isinstance(prompt, ImageLoadError):
                yield Corrupt(item_id, str(prompt))
                continue
            base = self.root / folder / seed
            yield PairItem(item_id, prompt, partial(open_image, f"{base}_0.jpg"), partial(open_image, f"{base}_1.jpg"))


class Ip2pParquet:
    """The parquet release (original_image, edited_image, edit_prompt), streamed by record batches.

    Ids are '<file name>/<row>'; a row's images are decoded only when a pass wants it.
    """

    def __init__(self, paths: Sequence[str | Path]):
        import pyarrow.parquet as pq

        self.paths = [Path(p) for p in paths]
        for path in self.paths:
            if not path.is_file():
                raise EmoEditorError(f"{missing_path(path, 'Ip2p parquet file')}; pass the downloaded *.parquet files")
            names = pq.ParquetFile(path).schema_arrow.names
            missing = [c for c in PARQUET_COLUMNS if c not in names]
            if missing:
                raise EmoEditorError(f"Ip2p parquet file {path}: no column(s) {', '.join(missing)} (it has "
                                     f"{', '.join(names)}); expected the CLIP-filtered Ip2p release")

    def describe(self) -> dict:
        return {"kind": "ip2p_parquet", "files": [str(p) for p in self.paths]}

    def items(self, wanted: Wanted) -> Iterator[Entry]:
        import pyarrow.parquet as pq

        for path in self.paths:
            row = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=PARQUET_COLUMNS):
                columns = {name: batch.column(name) for name in PARQUET_COLUMNS}
                for i in range(batch.num_rows):
                    item_id = f"{path.name}/{row + i:08d}"
                    if not wanted(item_id):
                        continue
                    prompt = columns["edit_prompt"][i].as_py()
                    if not isinstance(prompt, str) or not prompt.strip():
                        yield Corrupt(item_id, f"{path} row {row + i}: empty edit_prompt")
                        continue
                    source, target = columns["original_image"][i].as_py(), columns["edited_image"][i].as_py()
                    yield PairItem(item_id, prompt.strip(),
                                   partial(decode_bytes, source, f"{path} row {row + i} original_image"),
                                   partial(decode_bytes, target, f"{path} row {row + i} edited_image"))
                row += batch.num_rows


class EmoSetImages:
    """EmoSet images (either layout, the one reader in emoeditor.data.emoset) from the chosen split lists.

    Images of class folders without split information are always used.
    """

    def __init__(self, root: str | Path, layout: str = "auto", splits: Sequence[str] = ("train", "val")):
        self.root = Path(root)
        self.splits = tuple(splits)
        self.images = [img for img in list_images(self.root, layout) if img.split is None or img.split in self.splits]

    def describe(self) -> dict:
        return {"kind": "emoset", "root": str(self.root), "splits": list(self.splits)}

    def items(self, wanted: Wanted) -> Iterator[Entry]:
        for img in self.images:
            if wanted(img.path):
                yield ImageItem(img.path, img.emotion, partial(open_image, self.root / img.path))
