import importlib.util
import json
import os
import re
import sys
from contextlib import contextmanager
from types import ModuleType

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TINY_CONFIG = os.path.join(ROOT, "tests", "data", "tiny.yaml")


def load_script(name: str) -> ModuleType:
    """A script of ``dataset_scripts/`` imported as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "dataset_scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generator_losses(log: str) -> dict[int, str]:
    """Training loss per generator epoch, as logged."""
    generator = log[log.index("CEMG stage: generator"):] if "CEMG stage: generator" in log else log
    return {int(e): loss for e, loss in re.findall(r"epoch (\d+) training \[time: [\d.]+s, train loss: ([\d.]+)\]",
                                                  generator)}


@pytest.fixture
def stops_with(capsys):
    """``with stops_with(regex):`` the call inside ends its program as a user error does (``recbole_cemg.errors``):
    exit code 2 (``code=130`` for Ctrl-C) and a message on stderr matching ``regex``, without a traceback."""
    @contextmanager
    def check(message: str, code: int = 2):
        with pytest.raises(SystemExit) as exit_info:
            yield
        err = capsys.readouterr().err
        assert exit_info.value.code == code, err
        assert re.search(message, err) and "Traceback" not in err, err

    return check


@pytest.fixture
def tiny_run_config(tmp_path, monkeypatch):
    """Config files + overrides for a run on the tiny data set, writing into a temporary folder."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["pytest"])  # RecBole's Config reads --key=value from the command line
    return {"config_file_list": [TINY_CONFIG],
            "config_dict": {"checkpoint_dir": str(tmp_path / "saved")}}


# A tiny open_clip architecture: both towers, 16-dimensional embeddings.
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 16, "layers": 1, "width": 32, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def tiny_clip(tmp_path, monkeypatch):
    """``TINY_CLIP`` registered as open_clip model "tiny-clip" for this test only, and a local checkpoint of it."""
    import open_clip
    from open_clip import factory

    monkeypatch.setattr(factory, "_MODEL_CONFIG_PATHS", list(factory._MODEL_CONFIG_PATHS))
    monkeypatch.setattr(factory, "_MODEL_CONFIGS", dict(factory._MODEL_CONFIGS))
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip").eval()
    checkpoint = tmp_path / "tiny-clip.pt"
    torch.save(model.state_dict(), checkpoint)
    return model, checkpoint
