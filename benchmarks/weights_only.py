"""Copy a RecBole checkpoint without its optimizer state: the config and the weights (about 3.5 MB for SASRec on
Beauty instead of 10), enough for CEMG's ``collab_source`` and for score ensembles.

    python benchmarks/weights_only.py <checkpoint.pth> <output.pth>
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recbole_cemg.io import atomic_write  # noqa: E402


def main(source: str, target: str) -> None:
    checkpoint = torch.load(source, weights_only=False, map_location="cpu")  # RecBole pickles its Config
    with atomic_write(target, "wb") as f:
        torch.save({"config": checkpoint["config"], "state_dict": checkpoint["state_dict"]}, f)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
