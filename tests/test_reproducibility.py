"""With a fixed seed on the CPU, two CEMG runs give identical numbers, and the result file records what made them."""

from recbole_cemg.quick_start import run_cemg


def test_two_runs_with_one_seed_give_identical_metrics(tiny_run_config):
    config_dict = dict(tiny_run_config["config_dict"], epochs=3, tokenizer_epochs=20, collab_epochs=2)
    first, second = (run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], config_dict) for _ in range(2))
    assert first["test_result"] == second["test_result"]
    assert first["best_valid_result"] == second["best_valid_result"]
    assert first["tokenizer"]["unique_before_dedup"] == second["tokenizer"]["unique_before_dedup"]
    assert first["seed"] == 2020 and first["config"]["codebook_size"] == 16
    assert set(first["versions"]) >= {"recbole", "torch", "transformers", "peft", "numpy", "pandas"}
