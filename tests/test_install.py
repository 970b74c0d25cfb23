"""The packages as installed (pyproject.toml): the interpreter running the tests imports this
checkout's packages from any folder, with their data files; a wheel holds every module and
every data file of the packages, and requirements.txt as its dependencies."""
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("custom_common", "custom_datasets", "custom_models", "custom_transforms",
            "custom_runs", "custom_reports", "custom_cli", "bench")

# run from another folder with no PYTHONPATH, so only an installed package can be found
IMPORTED = """
import importlib.resources, importlib.util, json
if importlib.util.find_spec("custom_transforms") is None:
    print(json.dumps(None))
    raise SystemExit(0)
import custom_runs, custom_transforms
from custom_runs.identity import PAPER_RESULTS_PATH, load_paper_results
from custom_transforms.policies import POLICY_FILES, load_policy
print(json.dumps({
    "files": {name: importlib.util.find_spec(name).origin for name in %r},
    "policy_files": {family: str(path) for family, path in POLICY_FILES.items()},
    "dada_svhn_subpolicies": len(load_policy("dada", "svhn")),
    "paper_results_path": str(PAPER_RESULTS_PATH),
    "paper_results": load_paper_results(),
    "resources": [importlib.resources.files(package).joinpath(name).is_file() for package, name in
                  (("custom_transforms", "policies/dada.json"),
                   ("custom_transforms", "policies/fast_autoaugment.json"),
                   ("custom_runs", "paper_results.json"))],
}))
""" % (PACKAGES,)


def outside_environment():
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def resolved(paths: dict) -> dict:
    return {key: Path(path).resolve() for key, path in paths.items()}


def test_the_installed_packages_are_this_checkouts_and_read_their_data_files(tmp_path):
    finished = subprocess.run([sys.executable, "-c", IMPORTED], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env=outside_environment())
    assert finished.returncode == 0, finished.stderr
    found = json.loads(finished.stdout)
    if found is None:
        pytest.skip(f"the packages are not installed for {sys.executable} "
                    f"(`make venv` installs them; by hand: pip install --no-deps -e .)")
    assert resolved(found["files"]) == {name: ROOT / name / "__init__.py" for name in PACKAGES}
    assert resolved(found["policy_files"]) == {
        "fast_autoaugment": ROOT / "custom_transforms" / "policies" / "fast_autoaugment.json",
        "dada": ROOT / "custom_transforms" / "policies" / "dada.json"}
    assert found["dada_svhn_subpolicies"] == 25
    assert Path(found["paper_results_path"]).resolve() == ROOT / "custom_runs" / "paper_results.json"
    assert found["paper_results"] == json.loads((ROOT / "custom_runs" / "paper_results.json").read_text())
    assert found["resources"] == [True, True, True]


def wheel_builder_missing():
    """Why a wheel cannot be built here without the network, or None."""
    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("setuptools") is None:
        return f"pip and setuptools are needed in {sys.executable} to build a wheel offline"
    version = importlib.metadata.version("setuptools")  # not imported: it patches distutils
    # setuptools builds wheels on its own from 70.1; before, the wheel package does
    if tuple(int(part) for part in version.split(".")[:2]) < (70, 1) \
            and importlib.util.find_spec("wheel") is None:
        return f"setuptools {version} needs the wheel package to build a wheel"
    return None


def package_files(root: Path):
    """Every file of the packages under `root` that a wheel must hold (no caches)."""
    return sorted(str(path.relative_to(root)) for name in PACKAGES for path in (root / name).rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc")


def test_a_wheel_holds_every_module_and_data_file_and_requires_requirements_txt(tmp_path):
    missing = wheel_builder_missing()
    if missing:
        pytest.skip(missing)
    # built from a copy: a build writes build/ and *.egg-info/ into the folder it builds
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    finished = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                               "--no-build-isolation", "--no-index", "--wheel-dir", str(tmp_path / "wheel"),
                               str(source)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    [wheel] = (tmp_path / "wheel").glob("autodo_reproduction-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata] = [name for name in names if name.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip() for line in archive.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    shipped = sorted(name for name in names if name.split("/")[0] in PACKAGES)
    assert shipped == package_files(ROOT)
    data = [name for name in shipped if not name.endswith(".py")]
    assert data == ["custom_runs/paper_results.json", "custom_transforms/policies/dada.json",
                    "custom_transforms/policies/fast_autoaugment.json"]
    requirements = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert requires == requirements
