"""Seconds per training step of a SASRec-sized model on this machine: what a Beauty epoch costs before running one.

The step is SASRec-CE at RecBole's defaults on Beauty: 2 transformer layers of width 64 (2 heads, inner 256, dropout
0.5), batch 2048 of 20-item histories, full softmax over 12,101 items, Adam. Run it once per thread count, and twice
side by side, to choose between one run with all cores and several runs with one core each:

    OMP_NUM_THREADS=2 python benchmarks/sasrec_step_time.py --threads 2
    OMP_NUM_THREADS=1 python benchmarks/sasrec_step_time.py --threads 1
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch import nn


def step_seconds(threads: int, steps: int, batch: int = 2048, length: int = 20, hidden: int = 64,
                 items: int = 12101) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    embedding, positions = nn.Embedding(items, hidden), nn.Embedding(length, hidden)
    layer = nn.TransformerEncoderLayer(hidden, 2, 4 * hidden, dropout=0.5, activation="gelu", batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    optimizer = torch.optim.Adam([*embedding.parameters(), *positions.parameters(), *encoder.parameters()], 1e-3)
    history, target = torch.randint(1, items, (batch, length)), torch.randint(1, items, (batch,))
    causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)

    def step() -> None:
        states = encoder(nn.functional.dropout(embedding(history) + positions.weight, 0.5), mask=causal)[:, -1]
        loss = nn.functional.cross_entropy(states @ embedding.weight.T, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    seconds = step_seconds(args.threads, args.steps)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads: "
          f"{seconds:.2f} s per step, {76 * seconds:.0f} s per Beauty epoch (76 steps)")
