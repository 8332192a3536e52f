import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TINY_CONFIG = os.path.join(ROOT, "tests", "data", "tiny.yaml")


@pytest.fixture
def tiny_run_config(tmp_path, monkeypatch):
    """Config files + overrides for a run on the tiny data set, writing into a temporary folder."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["pytest"])  # RecBole's Config reads --key=value from the command line
    return {"config_file_list": [TINY_CONFIG],
            "config_dict": {"checkpoint_dir": str(tmp_path / "saved")}}
