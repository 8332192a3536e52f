"""benchmarks/seed_ensembles.py: a model's runs reloaded from their checkpoints and ensembled."""

import pytest
from conftest import load_script

from recbole_cemg.errors import InputError
from recbole_cemg.quick_start import run_cemg


def test_single_runs_reproduce_their_records_and_one_run_twice_ranks_as_itself(tiny_run_config):
    module = load_script("seed_ensembles", "benchmarks")
    runs = [run_cemg("SASRec", "tiny", tiny_run_config["config_file_list"],
                     dict(tiny_run_config["config_dict"], seed=seed, epochs=2), verbose=False) for seed in (1, 2)]
    table = module.ensembles([runs, [runs[0], runs[0]]])
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()[2:] if line.startswith("|")]
    assert [row[2] for row in rows] == ["1 run (mean)", "2 runs (mean of 1)"] * 2
    recorded = [run["test_result"]["recall@10"] for run in runs]
    assert float(rows[0][3]) == pytest.approx(sum(recorded) / 2, abs=1e-4)  # reloaded: the runs as recorded
    assert rows[3][3:5] == rows[2][3:5]  # a run summed with itself ranks as it does alone
    assert rows[2][3] == f"{recorded[0]:.4f}"
    # the paired difference of one run against the mean of the reference's runs, user by user
    assert rows[2][5].startswith(f"{recorded[0] - sum(recorded) / 2:+.4f} [")
    assert rows[0][5] == "-" and rows[1][6] == "-"


def test_a_group_of_two_models_is_refused_unless_named(tiny_run_config):
    module = load_script("seed_ensembles", "benchmarks")
    run = run_cemg("SASRec", "tiny", tiny_run_config["config_file_list"],
                   dict(tiny_run_config["config_dict"], epochs=1), verbose=False)
    with pytest.raises(InputError, match="one group holds runs of"):
        module.ensembles([[run, dict(run, model="GRU4Rec")]])
    table = module.ensembles([[run], [run, dict(run, model="GRU4Rec")]], ["alone", "mixed"])
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()[2:] if line.startswith("|")]
    assert [row[:3] for row in rows] == [["alone", "1", "1 run (mean)"], ["mixed", "2", "1 run (mean)"],
                                         ["mixed", "2", "2 runs (mean of 1)"]]
    assert rows[2][3:5] == rows[0][3:5]  # the same checkpoint twice ranks as it does alone
