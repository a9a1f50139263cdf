"""Every editing method behind one Editor interface; one file per method.

`discovery.discover()` (run before any method spec is parsed) imports every module in this
folder, so a new method is one new file that decorates its factory with `register_editor`:
nothing else changes. Nothing is imported here, so `emoeditor.editors.base` stays importable
from anywhere.
"""
