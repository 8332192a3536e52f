"""Pictures that go next to a run's checkpoint."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def plot_code_usage(codes: torch.Tensor, level_sizes: list[int], path: str) -> None:
    """One panel per code level: how many items use each code, codes sorted by use (collapse shows as a spike)."""
    fig, axes = plt.subplots(1, len(level_sizes), figsize=(3.2 * len(level_sizes), 2.8), squeeze=False)
    for level, (ax, size) in enumerate(zip(axes[0], level_sizes)):
        counts = torch.bincount(codes[:, level], minlength=size).sort(descending=True).values
        used = int((counts > 0).sum())
        ax.bar(range(size), counts.tolist(), width=1.0)
        ax.set_title(f"level {level}: {used}/{size} codes used", fontsize=9)
        ax.set_xlabel("code (sorted by use)", fontsize=8)
        ax.set_ylabel("items", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
