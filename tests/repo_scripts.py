"""The repository's entry points (scripts/*.py, train.py) loaded as modules, for in-process tests.

They are not importable as a package, and running them in-process is much cheaper than a subprocess.
"""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_script(relpath: str):
    """Execute REPO/relpath as a fresh module and return it (its `if __name__ == "__main__"` block does not run)."""
    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(f"repo_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
