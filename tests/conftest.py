import importlib.util
import itertools
import json
import os
import re
import sys
from contextlib import contextmanager
from types import ModuleType

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of the suite's 2 workers: one core each, and so the runs they start
    os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402  (after the thread count, which torch reads when it loads)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TINY_CONFIG = os.path.join(ROOT, "tests", "data", "tiny.yaml")


def load_script(name: str, folder: str = "dataset_scripts") -> ModuleType:
    """A script of ``dataset_scripts/`` (or ``benchmarks/``) imported as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_catalogue(levels: list[int], n_items: int, seed: int = 0) -> torch.Tensor:
    """Code table ``[n_items + 1, levels]`` of unique random tuples; row 0 is the padding item."""
    g = torch.Generator().manual_seed(seed)
    every = torch.tensor(list(itertools.product(*(range(s) for s in levels))))
    chosen = every[torch.randperm(len(every), generator=g)[:n_items]]
    return torch.cat([torch.zeros(1, len(levels), dtype=torch.long), chosen])


def generator_losses(log: str) -> dict[int, str]:
    """Training loss per generator epoch, as logged."""
    generator = log[log.index("CEMG stage: generator"):] if "CEMG stage: generator" in log else log
    return {int(e): loss for e, loss in re.findall(r"epoch (\d+) training \[time: [\d.]+s, train loss: ([\d.]+)\]",
                                                  generator)}


def last_weights(checkpoint: str) -> dict[str, torch.Tensor]:
    """The float weights a run had after its last epoch (its resume state), whichever epoch was best."""
    from recbole_cemg.resume import state_path

    state = torch.load(state_path(checkpoint), map_location="cpu", weights_only=True)["model"]
    return {name: value for name, value in state.items() if value.is_floating_point()}


def assert_weights_agree(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float) -> None:
    """Trained weights that must be the same up to float rounding. Rounding differs between CPUs and its effect
    grows over the epochs, so ``atol`` is set per test, well above what was observed and well below what training
    something else (another seed, a missing gradient all-reduce) gives."""
    assert actual.keys() == expected.keys() and expected
    for name, value in expected.items():
        assert (actual[name] - value).abs().max() <= atol, name


def assert_metrics_agree(actual: dict, expected: dict, users: int = 3, total: int = 120) -> None:
    """Metrics of two runs that trained the same weights up to float rounding: where beam scores nearly tie, that
    rounding (which differs between CPUs) can still flip a few users' rankings, so up to ``users`` of the ``total``
    test users may count differently. Exact equality would depend on the machine's float rounding."""
    for split in ("best_valid_result", "test_result"):
        assert actual[split].keys() == expected[split].keys()
        for metric, value in expected[split].items():
            assert actual[split][metric] == pytest.approx(value, abs=users / total + 1e-4), (split, metric)


def numbers(value) -> list[float]:
    """Every number of a nested result (dicts in key order, lists), to compare two results within a tolerance."""
    if isinstance(value, dict):
        return [n for key in sorted(value) for n in numbers(value[key])]
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in numbers(item)]
    return [float(value)] if isinstance(value, (int, float)) else []


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
