"""EmoEditor: evoking emotions through image diffusion models (Lin et al., ICCV 2025)."""

from .constants import EMOTIONS, NEGATIVE, NUM_EMOTIONS, POSITIVE
from .emotions import parse_target
from .errors import EmoEditorError

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "NEGATIVE", "NUM_EMOTIONS", "POSITIVE", "parse_target", "EmoEditorError", "__version__"]
