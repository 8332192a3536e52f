"""Item scoring speed: one training step of the items generator's output side (the log-probability of every item's
code tuple after each position, forward + backward), as the generator computes it (one product of the concatenated
heads with every item's concatenated code embeddings) against the same scores gathered from each level's code logits
(a ``[positions, codes]`` product per level, each item's codes looked up and added: fewer multiplications).

    python benchmarks/item_scoring_speed.py --items=12101 --positions=2048 --shapes=3x256,8x64,8x256,16x256 \
        --output=benchmarks/results/item-scoring-cpu

Random weights and codes the size of Beauty (speed does not depend on what they are); a batch of 256 Beauty training
windows has about 2,000 positions. The last column checks that both ways give the same log-probabilities. Session 13
measured the gathered form at 0.7-0.8x the product's speed on the 2-core CPU (the per-item lookups and their scatter
in the backward pass cost more than the multiplications they save), so the generator keeps the product.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recbole_cemg.io import atomic_write  # noqa: E402
from recbole_cemg.model.item_generator import ItemLevelGenerator  # noqa: E402
from recbole_cemg.quick_start import machine_description  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gathered_form(model: ItemLevelGenerator, states: torch.Tensor) -> torch.Tensor:
    """The alternative: each level's code logits, each item's looked up and added, a log-softmax."""
    logits = [head(states) @ table.weight.T for head, table in zip(model.heads, model.code_embeddings)]
    scores = sum(level.index_select(-1, model.item_codes[:, i]) for i, level in enumerate(logits))
    scores[:, 0] = float("-inf")
    return torch.log_softmax(scores, dim=-1)


def step_seconds(score, states: torch.Tensor, targets: torch.Tensor, repeats: int) -> float:
    """Median seconds of forward + backward of the NLL of ``targets`` under ``score(states)``."""
    times = []
    for _ in range(repeats + 1):  # the first one warms up
        start = time.perf_counter()
        F.nll_loss(score(states), targets).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def measure(shape: str, items: int, positions: int, repeats: int) -> dict:
    levels, size = (int(x) for x in shape.split("x"))
    with open(os.path.join(ROOT, "properties", "model", "CEMG.yaml")) as f:
        llm_config = yaml.safe_load(f)["llm_config"]
    torch.manual_seed(0)
    model = ItemLevelGenerator([size] * levels + [256], collab_dim=64, max_history_items=50, llm_config=llm_config)
    codes = torch.cat([torch.randint(size, (items + 1, levels)), torch.randint(256, (items + 1, 1))], dim=1)
    model.set_items(codes, torch.randn(items + 1, 64))
    states = torch.randn(positions, llm_config["hidden_size"])
    targets = torch.randint(1, items + 1, (positions,))
    with torch.no_grad():
        difference = float((model.item_log_probs(states) - gathered_form(model, states))[:, 1:].abs().max())
    product = step_seconds(model.item_log_probs, states, targets, repeats)
    gathered = step_seconds(lambda s: gathered_form(model, s), states, targets, repeats)
    return {"codes": f"{levels} x {size} + 256", "positions": positions, "items": items,
            "product_ms": round(product * 1000, 1), "gathered_ms": round(gathered * 1000, 1),
            "gathered_speed_up": round(product / gathered, 2), "max_abs_difference": difference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12101)
    parser.add_argument("--positions", type=int, default=2048)
    parser.add_argument("--shapes", default="3x256,8x64,8x256,16x256", help="levels x codes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=None, help="also write <output>.md and <output>.json")
    args = parser.parse_args()
    rows = [measure(shape, args.items, args.positions, args.repeats) for shape in args.shapes.split(",")]
    machine = {**machine_description(torch.device("cpu")), "threads": torch.get_num_threads()}
    lines = ["| codes | positions | items | product, CEMG (ms / step) | gathered (ms / step) | gathered speed-up | "
             "max abs difference |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['codes']} | {r['positions']} | {r['items']} | {r['product_ms']} | {r['gathered_ms']} | "
              f"{r['gathered_speed_up']}x | {r['max_abs_difference']:.1e} |" for r in rows]
    table = "\n".join(lines) + f"\n\nMachine: {json.dumps(machine)}\n"
    print(table)
    if args.output:
        with atomic_write(args.output + ".md", "w") as f:
            f.write(table)
        with atomic_write(args.output + ".json", "w") as f:
            json.dump({"rows": rows, "machine": machine, "command": " ".join(sys.argv)}, f, indent=1)


if __name__ == "__main__":
    main()
