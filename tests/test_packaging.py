"""The package as pip installs it: every import is a declared dependency, and a wheel built from
this tree, installed into a fresh virtual environment, runs the app (``ralif app`` answers HTTP 200
and its first page creates and opens the bundled demo from the installed files).

Nothing is downloaded: the wheel is built without build isolation, and the fresh environment
reuses the packages this interpreter already has (a ``.pth`` file names a folder of links to them,
leaving out any installed ``ralif``), with ``pip install --no-index``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from ralif.ui.launch import free_port

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "ralif" / "app"
# The app's files inside the wheel, whichever layout this checkout has.
WHEEL_MUST_HOLD = ("ralif/app/__init__.py", "ralif/app/app.py", "ralif/app/views/1_Label.py",
                   "ralif/app/.streamlit/config.toml", "ralif/app/assets/demo/embeddings.npz",
                   "ralif/app/assets/demo/README.md", "ralif/ui/components/label_grid/index.html",
                   "ralif/ui/components/label_grid/grid.js")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement(spec: str) -> tuple[str, set[str]]:
    """``"dask[distributed]>=1"`` -> (``"dask"``, {``"distributed"``})."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", spec)
    assert m, f"pyproject.toml: cannot read the dependency {spec!r}"
    return _normal(m[1]), {e.strip() for e in (m[2] or "").split(",") if e.strip()}


def _provided(dependencies: list[str]) -> set[str]:
    """The distributions the dependency list brings in by name, with those its extras add."""
    from packaging.requirements import Requirement

    out: set[str] = set()
    for spec in dependencies:
        name, extras = _requirement(spec)
        out.add(name)
        for extra in extras:
            for line in metadata.requires(name) or []:
                req = Requirement(line)
                if req.marker is not None and req.marker.evaluate({"extra": extra}):
                    out.add(_normal(req.name))
    return out


def _app_sources() -> list[Path]:
    tops = [ROOT / "ralif", ROOT / "app.py", ROOT / "views"]
    return [p for top in tops for p in ([top] if top.is_file() else sorted(top.rglob("*.py")))]


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level module -> where it is imported, for every import outside the standard library."""
    found: dict[str, list[str]] = {}
    for path in _app_sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "ralif" and top not in sys.stdlib_module_names:
                    found.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_import_is_a_declared_dependency() -> None:
    declared = _provided(_pyproject()["project"]["dependencies"])
    owners = metadata.packages_distributions()
    missing = []
    for module, where in sorted(_third_party_imports().items()):
        dists = {_normal(d) for d in owners.get(module, [])}
        if not dists:
            missing.append(f"{module} (not installed here, imported at {where[0]})")
        elif not dists & declared:
            missing.append(f"{module} from {'/'.join(sorted(dists))} (imported at {where[0]})")
    assert not missing, "imported but not in pyproject.toml's dependencies:\n" + "\n".join(missing)


def test_the_dependency_check_sees_a_missing_package() -> None:
    """The check above can fail: without dask's extra, distributed is not provided."""
    assert "distributed" in _provided(["dask[distributed]"])
    assert "distributed" not in _provided(["dask"])


def test_runtime_and_pinned_requirements_agree() -> None:
    """Every runtime dependency is pinned in requirements.txt (what `make venv` installs)."""
    pinned = {_requirement(line)[0] for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    unpinned = {_requirement(s)[0] for s in _pyproject()["project"]["dependencies"]} - pinned
    assert not unpinned, f"in pyproject.toml but not pinned in requirements.txt: {sorted(unpinned)}"


def test_checkout_wrappers_run_the_packaged_pages() -> None:
    """Once the pages live in ralif/app, each top-level page is a thin wrapper of its packaged
    twin, and both copies of the Streamlit settings agree."""
    if not (APP_DIR / "app.py").is_file():
        pytest.skip("the app's pages are still at the top of this checkout (scripts/package_pages.sh moves them)")
    for packaged in [APP_DIR / "app.py", *sorted((APP_DIR / "views").glob("[0-9]*.py"))]:
        rel = packaged.relative_to(APP_DIR).as_posix()
        wrapper = ROOT / rel
        assert wrapper.is_file(), f"{rel} has no top-level wrapper (run scripts/package_pages.sh)"
        assert f'run_packaged("{rel}")' in wrapper.read_text(encoding="utf-8"), f"{rel} is not a thin wrapper"
    top, packaged_cfg = ROOT / ".streamlit" / "config.toml", APP_DIR / ".streamlit" / "config.toml"
    assert top.read_bytes() == packaged_cfg.read_bytes(), "the two .streamlit/config.toml copies differ"


# ----------------------------------------------------------------------------- the wheel


def _source_tree(dest: Path) -> Path:
    """What the wheel is built from: this tree's package and metadata. Where the pages are still
    at the top, the copy gets them moved into the package by scripts/package_pages.sh, so the
    wheel holds the app either way (and the script is exercised)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    dest.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", dest)
    shutil.copytree(ROOT / "ralif", dest / "ralif", ignore=ignore)
    if not (APP_DIR / "app.py").is_file():
        for name in ("app.py", "views", ".streamlit", "assets", "scripts"):
            src = ROOT / name
            (shutil.copytree(src, dest / name, ignore=ignore) if src.is_dir() else shutil.copy2(src, dest / name))
        out = subprocess.run(["bash", str(dest / "scripts" / "package_pages.sh")], cwd=dest, capture_output=True,
                             text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
        assert out.returncode == 0, f"scripts/package_pages.sh failed:\n{out.stdout}\n{out.stderr}"
    return dest


def _reuse_installed(venv: Path, links: Path) -> None:
    """Let ``venv`` import what this interpreter has installed, except ralif itself: a folder of
    links to the site-packages entries, named by a .pth file."""
    site = Path(sysconfig.get_paths()["purelib"])
    links.mkdir(parents=True)
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("ralif", "__editable__", "_ralif")) or name.endswith(".pth"):
            continue
        (links / entry.name).symlink_to(entry)
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    target = subprocess.run([str(venv / "bin" / "python"), "-c", query], capture_output=True, text=True,
                            check=True).stdout.strip()
    Path(target, "reuse_installed.pth").write_text(f"{links}\n", encoding="utf-8")


def _wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"ralif app exited with {proc.returncode}:\n{out}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return int(r.status)
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"no answer from {url} within {timeout:.0f} s")


FIRST_PAGE = """
import os, sys
from pathlib import Path
import ralif, ralif.app
from ralif.project import Project
from streamlit.testing.v1 import AppTest
assert Path(ralif.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), ralif.__file__
# The background round server is a process of its own; the first page is what is checked here.
Project.start_round = lambda self, *a, **k: None
Project.ensure_round_server = lambda self: None
at = AppTest.from_file(str(ralif.app.APP_DIR / "app.py"), default_timeout=120).run()
assert not at.exception, [e.value for e in at.exception]
print("TITLE", at.title[0].value)
print("BATCH", len(Project.open(Path(os.environ["RALIF_PROJECTS"]) / "demo").pending_batch()))
"""


def test_wheel_installs_into_a_fresh_env_and_serves_the_app(tmp_path: Path) -> None:
    src = _source_tree(tmp_path / "src")
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(dist), str(src)], capture_output=True, text=True, timeout=600)
    if build.returncode and re.search(r"No module named '?(setuptools|wheel)|bdist_wheel", build.stderr):
        pytest.skip(f"a wheel cannot be built offline here (setuptools/wheel missing): {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = dist.glob("ralif-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    missing = [n for n in WHEEL_MUST_HOLD if n not in names]
    assert not missing, f"the wheel lacks {missing}"
    jpgs = sum(1 for n in names if n.startswith("ralif/app/assets/demo/images/") and n.endswith(".jpg"))
    assert jpgs == len(list((src / "ralif/app/assets/demo/images").rglob("*.jpg"))) > 0
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)

    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # Streamlit takes a copy outside any "site-packages" folder for its own development checkout.
    _reuse_installed(venv, tmp_path / "reused" / "site-packages")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RALIF_PROJECTS", "VIRTUAL_ENV")}
    # pip runs inside the fresh env: every declared dependency must already be installed there.
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                              "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=600, env=env)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    ralif_bin = venv / "bin" / "ralif"
    assert ralif_bin.is_file()

    projects = tmp_path / "projects"
    first = subprocess.run([str(venv / "bin" / "python"), "-c", FIRST_PAGE], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, env={**env, "RALIF_PROJECTS": str(projects)})
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    assert "TITLE Label · CIFAR-10 demo" in first.stdout and "BATCH 20" in first.stdout, first.stdout

    port = free_port()
    proc = subprocess.Popen([str(ralif_bin), "app", str(tmp_path / "served"), "--port", str(port)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/_stcore/health", proc, 120) == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(20)
