"""EmoEditor: evoking emotions through image diffusion models (Lin et al., ICCV 2025)."""

import emoeditor.logs  # noqa: F401  (drops import-time library notices before any library loads)
from emoeditor.constants import EMOTIONS, NEGATIVE, NUM_EMOTIONS, POSITIVE
from emoeditor.emotions import parse_target
from emoeditor.errors import EmoEditorError

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "NEGATIVE", "NUM_EMOTIONS", "POSITIVE", "parse_target", "EmoEditorError", "__version__"]
