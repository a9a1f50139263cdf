"""The human 2AFC study of the paper (Sec. 4, Fig. 5; Supp. S2.4, S3.1): stimuli, web server, analysis.

It lives outside the `emoeditor` package so the library never needs a web framework; it has its own
extra (fastapi, uvicorn) and its own jsPsych install (apps/study/package.json). See README.md here.
"""

from emoeditor.errors import EmoEditorError


class StudyError(EmoEditorError, ValueError):
    """Bad study input (evaluation run, dummy pool, stimulus folder, response file), named with its fix."""
