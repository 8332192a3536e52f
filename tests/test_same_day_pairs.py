"""benchmarks/same_day_pairs.py: test users split by the ASIN order of their validation and test items."""

import numpy as np
import pytest
from conftest import load_script

from recbole_cemg.evaluation import UserResults
from recbole_cemg.errors import InputError


def results(users: list[str], items: list[str], ranks: list[int]) -> UserResults:
    return UserResults(users, items, np.array(ranks), np.ones(len(users), dtype=np.int64))


def test_groups_implied_same_day_values_and_sibling_split(tmp_path):
    module = load_script("same_day_pairs", "benchmarks")
    inter = tmp_path / "toy.inter"
    # four users; each one's validation item is the second-to-last by the order field, whatever the file's order
    rows = [("u1", "A", 0), ("u1", "C", 2), ("u1", "B", 1), ("u2", "A", 0), ("u2", "D", 1), ("u2", "C", 2),
            ("u3", "A", 0), ("u3", "B", 1), ("u3", "E", 2), ("u4", "B", 0), ("u4", "E", 1), ("u4", "F", 2)]
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                     + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in rows))
    valid = module.validation_items(str(inter))
    assert valid.to_dict() == {"u1": "B", "u2": "D", "u3": "B", "u4": "E"}
    users, targets = ["u1", "u2", "u3", "u4"], ["C", "C", "E", "F"]  # u2's test ASIN (C) is below its valid one (D)
    reference = results(users, targets, [1, 20, 3, 30])
    model = results(users, targets, [20, 2, 4, 1])
    codes = {"B": [0, 1], "C": [0, 2], "D": [1, 0], "E": [2, 0], "F": [2, 1]}
    table = module.group_table({"ref": [reference], "gen": [model]}, valid, "ref", codes)
    assert "larger: 0.750, so an implied same-day share s = 0.500" in table
    lines = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in table.splitlines()
             if line.startswith("| ")}
    up, down = lines[("gen", "test ASIN > valid (3)")], lines[("gen", "test ASIN < valid (1)")]
    assert up.split(" | ")[2] == f"{2 / 3:.4f}" and down.split(" | ")[2] == "1.0000"  # recall@10
    # same-day only: (m_up P(up) - m_down P(down)) / s
    implied = lines[("gen", "same-day pairs, implied")].split(" | ")[2]
    assert implied == f"{(2 / 3 * 0.75 - 1.0 * 0.25) / 0.5:.4f}"
    # siblings: u1 (C shares B's first code) and u4 (F shares E's); u3's E does not share B's
    sibling = lines[("gen", "test ASIN > valid, sibling (2)")].split(" | ")
    assert sibling[2] == "0.5000" and sibling[4].startswith("+0.0000 [")  # u1 lost, u4 won: paired mean 0
    assert ("gen", "test ASIN > valid, other (1)") in lines
    assert ("gen", "test ASIN < valid, other (1)") in lines


def test_a_missing_inter_file_is_named(tmp_path):
    module = load_script("same_day_pairs", "benchmarks")
    with pytest.raises(InputError, match="no file .*missing.inter"):
        module.validation_items(str(tmp_path / "missing.inter"))
