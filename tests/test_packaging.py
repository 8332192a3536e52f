"""The package as users install it (``pip install .``): importable from any folder, with its YAML files, the shipped
ml-100k features and the console commands, which train a tiny model from outside the checkout.

The install is a regular (non-editable) one into a temporary folder, built offline from a copy of the files the
package is made of (so the checkout gets no ``build/`` folder, and a file the package needs but does not ship fails
here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PACKAGE_SOURCES = ("pyproject.toml", "README.md", "recbole_cemg", "properties", "assets")
COMMANDS = ("cemg-run", "cemg-compare", "cemg-hyper")
TINY = os.path.join(ROOT, "tests", "data")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """The install folder, a working directory outside the checkout, and the environment that uses the install."""
    pytest.importorskip("setuptools", minversion="70.1",
                        reason="building the wheel offline (--no-build-isolation) needs setuptools >= 70.1 here")
    folder = tmp_path_factory.mktemp("packaging")
    source, target, elsewhere = folder / "source", folder / "target", folder / "elsewhere"
    source.mkdir()
    for name in PACKAGE_SOURCES:
        if os.path.isdir(os.path.join(ROOT, name)):
            shutil.copytree(os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(os.path.join(ROOT, name), source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    elsewhere.mkdir()
    return {"target": target, "cwd": elsewhere, "env": {**os.environ, "PYTHONPATH": str(target)}}


def test_installed_copy_is_imported_with_its_shipped_files(installed):
    probe = ("import json, sys; sys.argv = sys.argv[:1]; import recbole_cemg; "
             "from recbole_cemg.config import Config, PROPERTIES_DIR; "
             "from recbole_cemg.data.features import feature_file; "
             "print(json.dumps([recbole_cemg.__file__, PROPERTIES_DIR, feature_file(Config('CEMG', 'ml-100k'), 'text')]))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=installed["cwd"], env=installed["env"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    module, properties, features = json.loads(done.stdout.strip().splitlines()[-1])
    package = str(installed["target"] / "recbole_cemg")
    assert module == os.path.join(package, "__init__.py")
    assert properties == os.path.join(package, "properties")
    assert {"overall.yaml", "model", "dataset"} <= set(os.listdir(properties))
    assert os.path.isfile(os.path.join(properties, "model", "CEMG.yaml"))
    assert features == os.path.join(package, "assets", "ml-100k", "ml-100k.text.npz") and os.path.isfile(features)


def test_console_commands_are_installed_and_cemg_run_trains(installed, tmp_path):
    commands = {name: installed["target"] / "bin" / name for name in COMMANDS}
    assert all(os.access(path, os.X_OK) for path in commands.values()), commands
    for name in ("cemg-compare", "cemg-hyper"):
        done = subprocess.run([str(commands[name]), "--help"], cwd=installed["cwd"], env=installed["env"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-3000:]
    result_file = tmp_path / "result.json"
    done = subprocess.run([str(commands["cemg-run"]), "--dataset=tiny", f"--config_files={TINY}/tiny.yaml",
                           f"--data_path={TINY}", f"--feature_path={TINY}/tiny", f"--checkpoint_dir={tmp_path / 'saved'}",
                           f"--result_file={result_file}", "--epochs=1", "--collab_epochs=1", "--tokenizer_epochs=5"],
                          cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["model"] == "CEMG" and result["dataset"] == "tiny"
    assert result["decoding"]["users"] == 120 and 0.0 <= result["test_result"]["recall@10"] <= 1.0
