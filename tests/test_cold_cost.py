"""benchmarks/cold_cost.py: a ratio-0 run against its cold-start run on exactly the cold run's warm users."""

import json

import numpy as np
import pytest
from conftest import load_script

from recbole_cemg.errors import InputError
from recbole_cemg.evaluation import UserResults


def cold_cost_module():
    return load_script("cold_cost", "benchmarks")


def write_run(folder, name: str, ranks: list[int], held_out: list[bool] | None = None) -> str:
    users = UserResults([f"u{i}" for i in range(len(ranks))], [f"i{i}" for i in range(len(ranks))],
                        np.array(ranks), np.ones(len(ranks), dtype=np.int64),
                        None if held_out is None else np.array(held_out))
    users.write(str(folder / f"{name}.users.tsv.gz"), ["recall@10"])
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"model": "SASRec", "per_user": f"{name}.users.tsv.gz"}))
    return str(path)


def test_warm_users_of_the_cold_run_are_compared_pairwise(tmp_path):
    row = cold_cost_module().warm_cost_row
    ratio0 = write_run(tmp_path, "ratio0", [1, 3, 20, 2, 5])
    # u1 is held out in the cold run: only u0, u2, u3, u4 count; ratio 0 hits three of them (ranks 1, 20, 2, 5)
    cold = write_run(tmp_path, "cold", [1, 900, 20, 3, 4], held_out=[False, True, False, False, False])
    cells = [c.strip() for c in row("SASRec", ratio0, cold).strip("|").split("|")]
    assert cells[:5] == ["SASRec", "4", "0.7500", "0.7500", "1.000x"]
    cold = write_run(tmp_path, "cold", [1, 900, 20, 50, 40], held_out=[False, True, False, False, False])
    cells = [c.strip() for c in row("SASRec", ratio0, cold).strip("|").split("|")]
    assert cells[2:5] == ["0.7500", "0.2500", "0.333x"]
    ndcg0 = np.mean([1.0, 0.0, 1 / np.log2(3), 1 / np.log2(6)])
    assert float(cells[6]) == pytest.approx(ndcg0, abs=1e-4)
    with pytest.raises(InputError, match="no held_out column"):
        row("SASRec", cold, ratio0)  # the cold run must come second
