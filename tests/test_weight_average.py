"""``weight_average``: the generator is validated, saved and tested with a running average of its weights, and a
resumed run continues that average where it stopped."""

from __future__ import annotations

import glob

import pytest
import torch
from torch import nn

from recbole_cemg.errors import InputError
from recbole_cemg.quick_start import run_cemg
from recbole_cemg.weight_average import WeightAverage
from tests.conftest import load_script


def test_the_average_follows_its_recursion_and_swaps_in_and_out():
    model = nn.Linear(2, 1)
    model.bias.requires_grad_(False)  # only trainable weights are averaged
    average = WeightAverage(model, decay=0.8)
    bias, trajectory = model.bias.detach().clone(), []
    for _ in range(30):
        with torch.no_grad():
            model.weight.add_(torch.randn(1, 2))
        average.update()
        trajectory.append(model.weight.detach().clone())
    decays = 0.8 ** torch.arange(29, -1, -1.0)  # step k of n = 30 counts decay^(n - k); the initialisation not at all
    expected = (decays[:, None, None] * torch.stack(trajectory)).sum(0) / decays.sum()
    raw = model.weight.detach().clone()
    assert average.average[0] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(RuntimeError), average.swapped_in():
        assert torch.equal(average.average[0], raw)  # the two slots hold each other's values
        assert model.weight.detach() == pytest.approx(expected, abs=1e-6)
        raise RuntimeError("an evaluation that fails")
    assert torch.equal(model.weight.detach(), raw) and torch.equal(model.bias.detach(), bias)  # swapped back anyway
    average.install()
    assert model.weight.detach() == pytest.approx(expected, abs=1e-6)


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten().float() for t in tensors])


def run(config: dict, tiny_run_config: dict, **overrides) -> tuple[dict, dict]:
    """A tiny CEMG run, and the training state it left (``<checkpoint>.resume.pth``)."""
    result = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], dict(config, **overrides), verbose=False)
    state = torch.load(result["checkpoint"].replace(".pth", ".resume.pth"), weights_only=True)
    return result, state


def test_a_run_saves_and_tests_the_average_and_a_resumed_run_continues_it(tiny_run_config):
    config = dict(tiny_run_config["config_dict"], weight_average=0.9, tokenizer_epochs=10, epochs=1, eval_step=1)
    one, state = run(config, tiny_run_config)
    steps = state["weight_average"]["steps"]
    assert steps == max(s["step"] for s in state["optimizer"]["state"].values()) > 0  # one update a step
    # one validated epoch, so it is the best: the checkpoint holds the average, not the weights training reached
    cold_prior = load_script("cold_prior", "benchmarks")
    model, data = cold_prior.rebuild(one, held_out=False)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    saved = torch.load(one["checkpoint"], weights_only=True)["state_dict"]
    raw = state["model"]
    assert [name for name in names if name.startswith("generator.heads")]
    for name, average in zip(names, state["weight_average"]["average"]):
        assert torch.equal(saved[name], average), name
    assert any(not torch.equal(saved[name], raw[name]) for name in names)
    # the recorded test result is the saved average's, reloaded through the real loading code
    test = cold_prior.scored(model, data.test)
    recorded = cold_prior.with_prior(test, torch.zeros(model.n_items, dtype=torch.bool), cold_prior.constant_prior(0))
    assert recorded["all"] == pytest.approx(one["test_result"]["recall@10"], abs=1e-4)
    # benchmarks/average_or_raw.py: the last epoch (here the best) under its average is the recorded result, and
    # under the raw weights another ranking of the same users
    average_or_raw = load_script("average_or_raw", "benchmarks")
    last = average_or_raw.last_epoch_results(one)
    assert last["average"]["test_result"] == pytest.approx(one["test_result"], abs=1e-4)
    assert last["average"]["best_valid_result"] == pytest.approx(one["best_valid_result"], abs=1e-4)
    assert last["raw"]["per_user"].users == last["average"]["per_user"].users
    assert (last["raw"]["per_user"].ranks != last["average"]["per_user"].ranks).any()

    # a finished run continues with more epochs: its average too, as if it had never stopped
    _, continued_state = run(config, tiny_run_config, epochs=2, resume=one["checkpoint"])
    _, uninterrupted = run(config, tiny_run_config, epochs=2)
    assert continued_state["weight_average"]["steps"] == uninterrupted["weight_average"]["steps"] == 2 * steps
    # within the float drift of two runs (observed 4e-4 of the norm, the raw weights 5e-4, on our CPU), far closer than
    # the average and the weights it averages (observed 0.02; an average restarted at the resume would be near those)
    theirs = flat(uninterrupted["weight_average"]["average"])
    assert (flat(continued_state["weight_average"]["average"]) - theirs).norm() < 0.002 * theirs.norm()
    assert (flat([uninterrupted["model"][name] for name in names]) - theirs).norm() > 0.01 * theirs.norm()

    # a run that kept no average cannot be continued with one: it would start from the raw weights, unannounced
    plain, _ = run(config, tiny_run_config, weight_average=0.0)
    with pytest.raises(InputError, match="kept no average of its weights"):
        run(config, tiny_run_config, epochs=2, resume=plain["checkpoint"])
    with pytest.raises(InputError, match="kept no average of its weights"):
        average_or_raw.last_epoch_results(plain)
    assert len(glob.glob(plain["checkpoint"].replace(".pth", "*"))) > 1  # the refused resume removed nothing
