"""The dependency ranges pyproject.toml declares are the ones tested.

`make test-min` installs every dependency at its declared minimum with a constraints file that
.ci/min_constraints.py generates from pyproject.toml; here pyproject.toml is read independently
(tomllib and a regex, not the generator's code) and compared with what the generator writes, and
the running environment is checked against both. cv2 must be the headless build: the GUI build
needs system GL libraries (libGL.so.1) that slim containers lack.
"""

import hashlib
import importlib.metadata as md
import inspect
import json
import re
import subprocess
import sys
from base64 import urlsafe_b64decode
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / ".ci" / "min_constraints.py"
PYPROJECT = ROOT / "pyproject.toml"
# written by `make install-min` into the environment it builds
ENV_CONSTRAINTS = Path(sys.prefix) / "constraints-min.txt"

REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;\s*(.*))?$")


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def split_requirement(line: str) -> tuple[str, dict[str, str]]:
    """'torch>=2.4,<2.15' -> ('torch', {'>=': '2.4', '<': '2.15'})."""
    m = REQ.match(line)
    assert m, f"cannot read requirement {line!r}"
    ops = {}
    for part in filter(None, (p.strip() for p in m.group(2).split(","))):
        op, version = re.match(r"(===|==|!=|~=|>=|<=|>|<)\s*(\S+)$", part).groups()
        ops[op] = version
    return canon(m.group(1)), ops


def declared_groups() -> dict[str, list[str]]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return {"core": project["dependencies"], **project.get("optional-dependencies", {})}


def declared_minimums(groups=None) -> dict[str, str]:
    out = {}
    for group, lines in declared_groups().items():
        if groups is None or group in groups:
            for line in lines:
                name, ops = split_requirement(line)
                assert ">=" in ops, f"[{group}] {line}: every dependency needs a '>=' minimum"
                out[name] = ops[">="]
    return out


def read_constraints(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, ops = split_requirement(line)
            assert list(ops) == ["=="], f"constraint {line!r} is not a single '==' pin"
            assert name not in pins, f"{name} pinned twice"
            pins[name] = ops["=="]
    return pins


def generate(tmp_path, *args) -> str:
    out = tmp_path / "constraints.txt"
    subprocess.run([sys.executable, str(GENERATOR), "-o", str(out), *args], check=True, cwd=tmp_path)
    return out.read_text()


def test_generated_constraints_pin_every_declared_minimum(tmp_path):
    pins = read_constraints(generate(tmp_path))
    assert pins == declared_minimums()
    # what `make install-min` installs: core + [dev]
    assert read_constraints(generate(tmp_path, "--extras", "dev")) == declared_minimums({"core", "dev"})


# The web apps' extras: installed by `make test` (newest releases), never by `make test-min`, whose
# tests marked `apps` are deselected (gradio 6 and the library's minimum transformers need different hubs).
APP_EXTRAS = ("demo", "study")


def test_every_extra_is_tested_through_dev():
    """`make test-min` installs [dev]; the other library extras only add packages [dev] has at the same range."""
    groups = declared_groups()
    tested = dict(split_requirement(line) for g in ("core", "dev") for line in groups[g])
    apps: dict = {}
    for extra, lines in groups.items():
        for line in lines:
            name, ops = split_requirement(line)
            if extra in APP_EXTRAS and name not in tested:  # one range for a package across the app extras
                assert apps.setdefault(name, ops) == ops, f"[{extra}] {line}: another range in another app extra"
                continue
            assert tested.get(name) == ops, f"[{extra}] {line}: not in core or [dev] with the same range"


def test_make_installs_the_app_extras_only_for_make_test():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"APPS_EXTRAS := {','.join(APP_EXTRAS)}" in makefile and '.[dev,$(APPS_EXTRAS)]' in makefile
    assert 'not apps"' in makefile.split("test-min: install-min")[1]  # test-min: the apps' tests need their extras


def test_readme_states_the_tested_minimums():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    missing = [f"{name} {low}" for name, low in declared_minimums().items() if f"{name} {low}" not in readme]
    assert not missing, f"README.md's install paragraph does not state these tested minimums: {missing}"


def test_generator_refuses_missing_or_conflicting_minimums(tmp_path):
    def run(deps, extras):
        # a JSON list of strings is a TOML array
        (tmp_path / "pyproject.toml").write_text(
            f'[project]\nname = "x"\ndependencies = {json.dumps(deps)}\n[project.optional-dependencies]\n{extras}\n')
        return subprocess.run([sys.executable, str(GENERATOR), "--pyproject", str(tmp_path / "pyproject.toml")],
                              capture_output=True, text=True)

    ok = run(["numpy>=1.24,<3", "pywin32>=300 ; sys_platform == 'win32'"], 'a = ["numpy>=1.24"]')
    assert ok.returncode == 0, ok.stderr
    assert read_constraints(ok.stdout) == {"numpy": "1.24", "pywin32": "300"}
    assert 'pywin32==300 ; sys_platform == "win32"' in ok.stdout
    assert "'>=' lower bound" in run(["numpy<3"], "").stderr
    assert "minimum" in run(["numpy>=1.24"], 'a = ["numpy>=1.26"]').stderr


def test_installed_versions_are_the_declared_ones():
    """Core deps installed and in range, [dev] ones in range; in `make test-min`'s environment each
    is exactly its declared minimum, from a constraints file that matches pyproject.toml now."""
    from packaging.specifiers import SpecifierSet

    def installed(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    groups = declared_groups()
    pinned = ENV_CONSTRAINTS.is_file()
    if pinned:
        assert read_constraints(ENV_CONSTRAINTS.read_text()) == declared_minimums(), (
            f"{ENV_CONSTRAINTS} is stale: rebuild it with `make install-min`")
    problems = []
    for group in ("core", "dev"):
        for line in groups[group]:
            name, ops = split_requirement(line)
            version = installed(name)
            if version is None:
                if group == "core" or pinned:
                    problems.append(f"{name}: not installed")
                continue
            declared = ",".join(op + v for op, v in ops.items())
            spec = SpecifierSet(f"=={ops['>=']}" if pinned else declared)
            if not spec.contains(version, prereleases=True):
                problems.append(f"{name} {version} not {spec} ([{group}] {line})")
    assert not problems, "\n".join(problems)


def test_gdown_has_the_api_the_release_download_uses():
    """scripts/download_weights.py (the [download] extra) lists Drive folders with
    download_folder(skip_download=True) (gdown >= 5.1) and resumes with download(id=, resume=)."""
    gdown = pytest.importorskip("gdown")
    assert {"url", "quiet", "skip_download"} <= set(inspect.signature(gdown.download_folder).parameters)
    assert {"id", "output", "resume"} <= set(inspect.signature(gdown.download).parameters)


CV2_PROBE = r"""
import importlib.metadata as md, json, sys
import numpy as np
import cv2

img = np.zeros((32, 32), np.uint8)
img[8:24, 8:24] = 255
edges = cv2.Canny(img, 50, 150)
grey = cv2.cvtColor(np.dstack([img] * 3), cv2.COLOR_RGB2GRAY)
gui = [l.split(":", 1)[1].strip() for l in cv2.getBuildInformation().splitlines() if l.strip().startswith("GUI:")]
maps = open("/proc/self/maps").read() if sys.platform.startswith("linux") else ""
others = {}
for name in ("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"):
    try:
        others[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
print(json.dumps({
    "file": cv2.__file__, "edges": int((edges > 0).sum()), "grey_ok": bool((grey == img).all()),
    "gui": gui, "others": others,
    "gl_loaded": sorted({l.split()[-1] for l in maps.splitlines() if "/libGL" in l or "/libQt" in l}),
}))
"""


def test_cv2_is_the_headless_build():
    """`import cv2` works without system GL libraries: the cv2 on disk is opencv-python-headless's
    (no GUI backend, no libGL loaded), and no GUI opencv distribution shares its cv2/ folder."""
    probe = subprocess.run([sys.executable, "-c", CV2_PROBE], capture_output=True, text=True)
    assert probe.returncode == 0, f"import cv2 failed (GUI build without libGL.so.1?):\n{probe.stderr}"
    found = json.loads(probe.stdout)
    assert found["edges"] > 0 and found["grey_ok"]
    assert found["gui"] == ["NONE"], f"cv2 is a GUI build ({found['gui']}); it needs libGL.so.1"
    assert found["gl_loaded"] == [], f"cv2 loaded GUI/GL libraries: {found['gl_loaded']}"
    assert found["others"] == {}, (
        f"{found['others']} installed next to opencv-python-headless: both write cv2/, the last "
        "installed wins; `pip uninstall` it, then `pip install --force-reinstall --no-deps "
        "opencv-python-headless==<version>`")

    # every cv2 binary on disk is byte-for-byte the one opencv-python-headless installed
    dist = md.distribution("opencv-python-headless")
    binaries = [f for f in dist.files if f.parts[0] == "cv2" and f.name.endswith(".so") and f.hash]
    assert binaries, "opencv-python-headless's RECORD lists no cv2 extension module"
    assert Path(found["file"]).resolve().parent == Path(dist.locate_file("cv2")).resolve()
    for f in binaries:
        algo, expected = f.hash.mode, f.hash.value
        digest = hashlib.new(algo, Path(dist.locate_file(f)).read_bytes()).digest()
        assert digest == urlsafe_b64decode(expected + "=" * (-len(expected) % 4)), (
            f"{f} was overwritten by another opencv distribution")
