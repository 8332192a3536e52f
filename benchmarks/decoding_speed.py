"""Decoding speed: trie-constrained beam search against Hugging Face's unconstrained beam search, same model.

    python benchmarks/decoding_speed.py --items=12101 --users=1024 --beams=10,20,50 --output=benchmarks/results/decoding-cpu

The generator is CEMG's default architecture (properties/model/CEMG.yaml, llm_config) with random weights over a
random catalogue of unique code tuples the size of Beauty: speed does not depend on what the weights learned.
Reports test users per second for each beam width, the constraint's overhead as a ratio, and the share of items
the unconstrained search generates that do not exist (why the constraint is needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recbole_cemg.io import atomic_write  # noqa: E402
from recbole_cemg.model.decoding import CodeTrie, constrained_beam_search  # noqa: E402
from recbole_cemg.model.generator import CodeGenerator  # noqa: E402
from recbole_cemg.model.tokenizer import deduplicate  # noqa: E402
from recbole_cemg.quick_start import machine_description  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_catalogue(items: int, levels: int, codebook: int, dedup: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(codebook, (items, levels), generator=generator)
    codes = deduplicate(codes, torch.rand(items, generator=generator), dedup)
    return torch.cat([torch.zeros_like(codes[:1]), codes])  # row 0: padding item


def timed(fn, device: torch.device) -> tuple[object, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12101)
    parser.add_argument("--users", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--beams", default="10,20,50")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default=None, help="write the table as <output>.md and <output>.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    with open(os.path.join(ROOT, "properties", "model", "CEMG.yaml"), encoding="utf-8") as f:
        defaults = yaml.safe_load(f)
    levels, codebook = defaults["codebook_levels"], defaults["codebook_size"]
    dedup = 16
    level_sizes = [codebook] * levels + [dedup]
    codes = random_catalogue(args.items, levels, codebook, dedup, seed=0)
    torch.manual_seed(0)
    generator = CodeGenerator(level_sizes, args.history, llm_config=defaults["llm_config"]).to(device).eval()
    trie = CodeTrie(codes, torch.arange(1, len(codes)), level_sizes).to(device)
    valid = {tuple(row) for row in codes[1:].tolist()}
    item_codes = codes.to(device)
    lengths_all = torch.randint(1, args.history + 1, (args.users,), generator=torch.Generator().manual_seed(1))
    history_all = torch.randint(1, len(codes), (args.users, args.history), generator=torch.Generator().manual_seed(2))
    history_all[torch.arange(args.history).unsqueeze(0) >= lengths_all.unsqueeze(1)] = 0

    rows = []
    for beams in [int(b) for b in args.beams.split(",")]:
        constrained_s = unconstrained_s = 0.0
        invalid = generated = 0
        for start in range(0, args.users, args.batch):
            history = generator.code_tokens(item_codes[history_all[start:start + args.batch].to(device)])
            lengths = lengths_all[start:start + args.batch].to(device)
            _, seconds = timed(lambda: constrained_beam_search(generator, trie, history, lengths, beams), device)
            constrained_s += seconds
            ids, mask = generator.history_inputs(history, lengths)
            out, seconds = timed(lambda: generator.model.generate(
                input_ids=ids, attention_mask=mask, num_beams=beams, num_return_sequences=beams,
                max_new_tokens=len(level_sizes), min_new_tokens=len(level_sizes), do_sample=False,
                pad_token_id=generator.pad_id, eos_token_id=None), device)
            unconstrained_s += seconds
            tokens = out[:, ids.shape[1]:] - generator.level_offsets
            for row in tokens.tolist():
                generated += 1
                invalid += tuple(row) not in valid
        rows.append({"beams": beams, "constrained users/s": args.users / constrained_s,
                     "unconstrained users/s": args.users / unconstrained_s,
                     "overhead ratio": constrained_s / unconstrained_s,
                     "unconstrained invalid share": invalid / generated})
    machine = machine_description(device)
    table = ["| beams | constrained users/s | HF unconstrained users/s | constrained / unconstrained time | "
             "invalid items from unconstrained |", "|---|---|---|---|---|"]
    table += [f"| {r['beams']} | {r['constrained users/s']:.0f} | {r['unconstrained users/s']:.0f} | "
              f"{r['overhead ratio']:.2f} | {r['unconstrained invalid share']:.1%} |" for r in rows]
    text = "\n".join(table) + (f"\n\n{args.items} items, codes {level_sizes}, {args.users} users, history <= "
                               f"{args.history}, batch {args.batch}; machine: {json.dumps(machine)}\n")
    print(text)
    if args.output:
        with atomic_write(f"{args.output}.md", "w", encoding="utf-8") as f:
            f.write(text)
        with atomic_write(f"{args.output}.json", "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "machine": machine, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
