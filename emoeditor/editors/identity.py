"""The identity method: returns the source (the "no edit" reference row: EMR/ESR floor, ENRD = ESS = 0)."""

from __future__ import annotations

from emoeditor.editors.base import Editor, EditResult
from emoeditor.editors.registry import MethodContext, register_editor


class IdentityEditor(Editor):
    """Returns the source: the 'no edit' reference row (EMR/ESR floor, ENRD = ESS = 0)."""

    name = "identity"

    def edit(self, images, targets, generators) -> EditResult:
        return EditResult(images=images.clone())


@register_editor("identity", options=())
def _identity(options: dict, context: MethodContext) -> Editor:
    return IdentityEditor()
