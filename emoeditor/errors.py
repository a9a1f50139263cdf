"""User-facing errors: CLIs print these as one clear message instead of a traceback."""


class EmoEditorError(Exception):
    """An error whose message names the bad input and what to do about it."""


class InvalidTargetError(EmoEditorError, ValueError):
    """A target emotion that cannot be parsed."""


class ImageLoadError(EmoEditorError, ValueError):
    """An image file that cannot be read or is unusable."""


class MissingWeightsError(EmoEditorError, FileNotFoundError):
    """A weight file or model folder that is not where it should be."""


class AnnotationError(EmoEditorError, ValueError):
    """Malformed EmoPair annotation entries."""
