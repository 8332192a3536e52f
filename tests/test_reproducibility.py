"""With a fixed seed on the CPU, two CEMG runs train the same model, and the result file records what made them.

The two runs are compared the way float rounding allows (on our CPU they are identical): the same weights within
1e-5 (one process, one CPU: only a change of summation order could move them; another seed draws the initial
weights, normal with std 0.02, about 0.1 apart at most), the same tokenizer
statistics within 1e-3, the same metrics within 3 of the 120 test users (near-tied beam scores can flip with rounding
that differs between CPUs and memory layouts).
"""

import pytest

from recbole_cemg.quick_start import run_cemg
from tests.conftest import assert_metrics_agree, assert_weights_agree, last_weights, numbers


def test_two_runs_with_one_seed_train_the_same_model(tiny_run_config):
    config_dict = dict(tiny_run_config["config_dict"], epochs=3, tokenizer_epochs=20, collab_epochs=2)
    first, second = (run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], config_dict) for _ in range(2))
    assert first["checkpoint"] != second["checkpoint"]
    assert_weights_agree(last_weights(second["checkpoint"]), last_weights(first["checkpoint"]), atol=1e-5)
    assert numbers(second["tokenizer"]) == pytest.approx(numbers(first["tokenizer"]), rel=1e-3, abs=1e-6)
    assert_metrics_agree(second, first)
    assert first["seed"] == 2020 and first["config"]["codebook_size"] == 16
    assert set(first["versions"]) >= {"recbole", "torch", "transformers", "peft", "numpy", "pandas"}
