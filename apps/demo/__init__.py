"""EmoEditor's interactive web demo (Gradio): `python -m apps.demo`. Outside the `emoeditor` package,
which never imports a web framework; `engine` holds the edits, `figures` the plots, `app` the page."""
