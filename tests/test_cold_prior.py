"""benchmarks/cold_prior.py: a finished cold-start run reloaded from its checkpoint, scored with a prior on the held-out
items."""

import argparse
import importlib.util
import os

import pytest
from conftest import ROOT

from recbole_cemg.errors import InputError
from recbole_cemg.quick_start import run_cemg


def cold_prior_module():
    spec = importlib.util.spec_from_file_location("cold_prior", os.path.join(ROOT, "benchmarks", "cold_prior.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reloaded_run_reproduces_its_record_and_a_prior_moves_lists_toward_cold_items(tiny_run_config):
    config = dict(tiny_run_config["config_dict"], cold_item_ratio=0.15, epochs=2, tokenizer_epochs=10,
                  loss_candidates="trained")
    result = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], config, verbose=False)
    module = cold_prior_module()
    model, data = module.rebuild(result)
    test = module.scored(model, data.test)
    recorded = module.with_prior(test, data.cold, module.constant_prior(0.0))
    assert recorded["all"] == pytest.approx(result["test_result"]["recall@10"], abs=1e-4)  # the same model and users
    assert recorded["cold"] == pytest.approx(result["cold_start"]["test_result"]["recall@10"], abs=1e-4)
    assert recorded["share"] == pytest.approx(result["cold_start"]["cold_share@10"], abs=1e-6)
    pushed = module.with_prior(test, data.cold, module.constant_prior(50.0))
    # the held-out items fill the lists as far as there are enough of them (9 of them here, none of a history)
    assert pushed["share"] == pytest.approx(min(int(data.cold.sum()), 10) / 10, abs=0.02)
    assert pushed["share"] > recorded["share"] and pushed["cold"] >= recorded["cold"]
    assert pushed["cold"] == pytest.approx(module.among_cold_only(test, data.cold))  # ... ranked among themselves
    table = module.prior_table(result, [0.0, 50.0], [0.3])
    assert f"| b = 0 | {result['best_valid_result']['recall@10']:.4f} |" in table  # valid of the best epoch
    assert "| mixture 0.3 | " in table
    codes, cold = model.item_codes, data.cold
    for level in range(codes.shape[1] - 1):
        crowded = sum(int((codes[cold, level] == c).sum()) for c in codes[cold, level].unique()
                      if (codes[cold, level] == c).sum() > (codes[model.warm_items, level] == c).sum())
        assert f"| {level + 1} | {len(codes[cold, level].unique())} of " in table
        assert f" | {crowded} of {int(cold.sum())} |" in table.splitlines()[-codes.shape[1] + 1 + level]


def test_a_run_without_held_out_items_is_refused():
    with pytest.raises(InputError, match="cold_item_ratio 0"):
        cold_prior_module().rebuild({"model": "CEMG", "dataset": "tiny", "config": {"cold_item_ratio": 0.0}})


def test_a_mixture_weight_outside_0_1_is_refused():
    module = cold_prior_module()
    with pytest.raises(argparse.ArgumentTypeError, match="strictly between 0 and 1"):
        module.share("1")
