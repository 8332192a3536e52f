"""benchmarks/rare_targets.py: two finished runs reloaded, with a popularity correction and CEMG's cells."""

import pytest
from conftest import load_script

from recbole_cemg.errors import InputError
from recbole_cemg.quick_start import run_cemg


def rows(table: str, title: str) -> list[list[str]]:
    """The cells of the markdown table under ``title``."""
    section = table.split(title)[1].split("\n\n")[1]
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in section.splitlines()[2:]]


def test_the_reloaded_runs_reproduce_their_records_and_the_cell_counts_add_up(tiny_run_config):
    module = load_script("rare_targets", "benchmarks")
    config = dict(tiny_run_config["config_dict"], epochs=2, tokenizer_epochs=10)
    cemg = run_cemg("CEMG", "tiny", tiny_run_config["config_file_list"], config, verbose=False)
    sasrec = run_cemg("SASRec", "tiny", tiny_run_config["config_file_list"], config, verbose=False)
    table = module.report(cemg, sasrec, [0.0, 1000.0])
    correction = rows(table, "Post-hoc popularity correction")
    assert [row[1] for row in correction] == ["0", "1000"] * 2
    for row, run in zip(correction[::2], (sasrec, cemg)):  # tau 0: the runs as recorded
        assert float(row[4]) == pytest.approx(run["test_result"]["recall@10"], abs=1e-4)
        assert float(row[5]) == pytest.approx(run["test_result"]["ndcg@10"], abs=1e-4)
    for plain, corrected in zip(correction[::2], correction[1::2]):  # a huge tau ranks by rarity, not by the model
        assert corrected[4] != plain[4] or corrected[2] != plain[2]
    cells = rows(table, "Test targets and CEMG's cells")
    assert cells
    for row in cells:  # each bucket's recall difference is its one-sided hits
        users, (cemg_recall, id_recall) = int(row[1]), (float(v) for v in row[2].split(" / "))
        assert round(users * (cemg_recall - id_recall)) == int(row[8]) - int(row[5])
        shares = [float(v) for v in row[3].split(" / ")]
        assert all(0.0 <= share <= 1.0 for share in shares)
    with pytest.raises(InputError, match="not a CEMG run"):
        module.report(sasrec, cemg, [0.0])
