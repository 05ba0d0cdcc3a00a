"""Supply chain: the hash-locked dependencies, the litellm releases that must never install, and
no ``.pth`` file (code Python runs at every start, the way litellm 1.82.7/1.82.8 were
compromised) in nometer's wheel or, beyond the two known ones, in the environment."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parents[2]
LOCKS = {"test": ROOT / "requirements" / "test.lock", "serve": ROOT / "requirements" / "serve.lock"}
COMPROMISED = {"litellm": (Version("1.82.7"), Version("1.82.8"))}
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)")
# what a venv of the lock holds: setuptools' distutils shim and the editable install of nometer
KNOWN_PTH = re.compile(r"^(distutils-precedence|__editable__\.nometer-[\w.]+|_virtualenv)\.pth$")


def pins(lock: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        if m := _PIN.match(line):
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def project() -> dict[str, list[str]]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"": meta["dependencies"], **meta["optional-dependencies"]}


def test_every_locked_package_is_pinned_with_hashes() -> None:
    for lock in LOCKS.values():
        entries = [chunk for chunk in re.split(r"\n(?=\S)", lock.read_text()) if _PIN.match(chunk)]
        assert entries, lock
        for entry in entries:
            assert "--hash=sha256:" in entry, f"{lock.name}: no hash for {entry.splitlines()[0]}"


def test_the_locks_cover_what_pyproject_asks_for() -> None:
    deps = project()
    wanted = {"serve": deps[""] + deps["postgres"] + deps["redis"], "test": deps[""] + deps["test"]}
    for name, reqs in wanted.items():
        locked = pins(LOCKS[name])
        for text in reqs:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate():
                continue
            key = req.name.lower().replace("_", "-")
            assert key in locked, f"{name}.lock lacks {req.name} (regenerate it: requirements/README.md)"
            assert req.specifier.contains(locked[key], prereleases=True), (
                f"{name}.lock: {key}=={locked[key]} vs {req}"
            )
        assert "setuptools" in locked  # for `pip install --no-deps --no-build-isolation -e .`


def test_compromised_litellm_releases_are_excluded_everywhere() -> None:
    for extra, reqs in project().items():
        for text in reqs:
            req = Requirement(text)
            for bad in COMPROMISED.get(req.name, ()):
                assert not req.specifier.contains(bad), f"[{extra}] {text} admits {bad}"
    for lock in LOCKS.values():
        for name, version in pins(lock).items():
            assert Version(version) not in COMPROMISED.get(name, ()), f"{lock.name} pins {name}=={version}"


def test_the_install_scripts_install_from_the_locks_with_hashes() -> None:
    for script, lock in (("test.sh", "requirements/test.lock"), ("serve.sh", "requirements/serve.lock")):
        text = (ROOT / "scripts" / script).read_text()
        assert f"--require-hashes -r {lock}" in text, script
        assert "--no-deps --no-build-isolation -e ." in text, script
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/serve.lock" in dockerfile and "--no-deps" in dockerfile


def test_the_built_wheel_holds_no_pth_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("gateway", "adapters", "pricing"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("nometer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("gateway/") for n in names)
    assert [n for n in names if n.endswith(".pth")] == []


def test_no_unknown_pth_file_in_the_environment() -> None:
    site = Path(sysconfig.get_paths()["purelib"])
    unknown = sorted(p.name for p in site.glob("*.pth") if not KNOWN_PTH.match(p.name))
    assert unknown == [], f"a dependency installed startup code: {unknown} in {site}"


def test_every_third_party_import_is_a_declared_dependency() -> None:
    """What the package imports is what pyproject asks for (a module present in a developer's venv
    by chance, and missing from a fresh install, fails here rather than on a user's machine)."""
    import ast
    from importlib.metadata import packages_distributions

    declared = {Requirement(t).name.lower().replace("_", "-") for reqs in project().values() for t in reqs}
    dists = packages_distributions()
    ours = {"gateway", "adapters", "pricing", "tests"}
    missing: set[str] = set()
    for pkg in ("gateway", "adapters", "pricing"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    # pynvml (nvidia-ml-py): the optional NVML energy meter, imported only when present
                    if top in ours or top in sys.stdlib_module_names or top == "pynvml":
                        continue
                    found = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
                    if not found & declared:
                        missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
