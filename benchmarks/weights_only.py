"""Copy a RecBole checkpoint without its optimizer state: the config and the weights (about 3.5 MB for SASRec on
Beauty instead of 10), enough for CEMG's ``collab_source`` and for score ensembles.

    python benchmarks/weights_only.py <checkpoint.pth> <output.pth> [<result.json>]

With a result file (the run's ``--result_file``), its ``checkpoint`` becomes the copy: the training checkpoint lives
in a session's work tree and is gone in the next one, while the copy is committed, so that ``compare.py --merge
--ensembles`` can still build ``SASRec + SASRec`` from the merged results.
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recbole_cemg.io import atomic_write  # noqa: E402


def main(source: str, target: str, result_file: str | None = None) -> None:
    checkpoint = torch.load(source, weights_only=False, map_location="cpu")  # RecBole pickles its Config
    with atomic_write(target, "wb") as f:
        torch.save({"config": checkpoint["config"], "state_dict": checkpoint["state_dict"]}, f)
    if result_file:
        with open(result_file) as f:
            result = json.load(f)
        result["checkpoint"] = target
        with atomic_write(result_file, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
