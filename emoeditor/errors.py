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


class PipelineInputError(EmoEditorError, ValueError):
    """A pipeline argument with the wrong shape, range or type."""


class SplitError(EmoEditorError, ValueError):
    """An EmoSet layout, split file or job specification that cannot be used."""


class MethodError(EmoEditorError, ValueError):
    """A method spec that names no registered method or has malformed options."""


class TrainingError(EmoEditorError):
    """A run that cannot go on (non-finite losses, inconsistent batch settings, changed data on resume)."""


class CheckpointMismatchError(EmoEditorError, ValueError):
    """A checkpoint whose keys or shapes do not fit the architecture it is loaded into."""


class LatentCacheError(EmoEditorError):
    """A latent cache that is missing, incomplete or built with other settings."""
