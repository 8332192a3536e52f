"""Beam search constrained by a prefix trie of the valid code tuples.

Every finished beam is an existing item, and since each item has exactly one code tuple, no item repeats within a
user's beams. The trie is stored level by level as dense child tables (``children[l][node, code]`` is the next node
or -1), so masking a step is one gather for the whole batch of beams, and an empty allowed set cannot occur: a
beam only exists if its prefix belongs to at least one item.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed import ReduceOp

from recbole_cemg.distributed import all_reduce


class CodeTrie(nn.Module):
    """Prefix trie over the code tuples of ``items`` (rows of ``codes``)."""

    def __init__(self, codes: torch.Tensor, items: torch.Tensor, level_sizes: list[int]) -> None:
        super().__init__()
        self.level_sizes = list(level_sizes)
        nodes = torch.zeros(len(items), dtype=torch.long)  # every item starts at the root (node 0 of level 0)
        children, leaf_items = [], None
        for level, size in enumerate(level_sizes):
            key = nodes * size + codes[items, level]
            unique_keys, next_nodes = torch.unique(key, return_inverse=True)
            table = torch.full((int(nodes.max()) + 1, size), -1, dtype=torch.long)
            table.view(-1)[unique_keys] = torch.arange(len(unique_keys))
            children.append(table)
            nodes = next_nodes
        leaf_items = torch.full((int(nodes.max()) + 1,), -1, dtype=torch.long)
        leaf_items[nodes] = items
        if (torch.bincount(nodes) > 1).any():
            raise ValueError("Two items share a code tuple; the code table must be de-duplicated first.")
        for level, table in enumerate(children):
            self.register_buffer(f"children_{level}", table, persistent=False)
        self.register_buffer("leaf_items", leaf_items, persistent=False)

    def child_table(self, level: int) -> torch.Tensor:
        return getattr(self, f"children_{level}")


@torch.no_grad()
def constrained_beam_search(generator, trie: CodeTrie, history_tokens: torch.Tensor, lengths: torch.Tensor,
                            beams: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``beams`` items per user by the generator's log-probability of their code tuple.

    Returns ``items [batch, beams]`` (-1 where fewer than ``beams`` items exist) and their scores (sum of the
    code tokens' log-probabilities, -inf for missing beams), best first.
    """
    ids, mask = generator.history_inputs(history_tokens, lengths)
    batch = ids.shape[0]
    out = generator.forward_ids(ids, mask, keep=1, use_cache=True)
    cache, logits = out.past_key_values, out.logits[:, -1].float()
    positions = mask.sum(1)  # position id of the first generated token
    node = torch.zeros(batch, 1, dtype=torch.long, device=ids.device)  # [batch, beams so far]
    score = torch.zeros(batch, 1, device=ids.device)
    last = len(trie.level_sizes) - 1
    for level, size in enumerate(trie.level_sizes):
        offset = int(generator.level_offsets[level])
        width_before = node.shape[1]
        step = torch.log_softmax(logits, dim=-1)[:, offset:offset + size].view(batch, width_before, size)
        child = trie.child_table(level)[node]  # [batch, beams, size]
        candidates = (score.unsqueeze(-1) + step).masked_fill(child < 0, float("-inf"))
        score, flat = candidates.flatten(1).topk(min(beams, width_before * size), dim=1)
        origin, code = flat // size, flat % size
        node = child.flatten(1).gather(1, flat).clamp(min=0)  # dead beams (score -inf) park on node 0
        if level == last:
            break
        if level == 0:  # one cache row per user becomes one per beam
            cache.batch_repeat_interleave(node.shape[1])
            mask = mask.repeat_interleave(node.shape[1], dim=0)
            positions = positions.repeat_interleave(node.shape[1], dim=0)
        else:  # each new beam continues the cache row of the beam it extends
            rows = (torch.arange(batch, device=ids.device).unsqueeze(1) * width_before + origin).flatten()
            cache.reorder_cache(rows)
            mask, positions = mask[rows], positions[rows]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = generator.model(input_ids=(code + offset).view(-1, 1), attention_mask=mask,
                              position_ids=positions.unsqueeze(1), past_key_values=cache, use_cache=True)
        cache, logits, positions = out.past_key_values, out.logits[:, -1].float(), positions + 1
    items = torch.where(torch.isfinite(score), trie.leaf_items[node], torch.full_like(node, -1))
    return items, score


class DecodingStats:
    """Counts for the result file: users decoded, time, and generated items that are invalid or repeated."""

    def __init__(self, beams: int) -> None:
        self.beams = beams
        self.reset()

    def reset(self) -> None:
        self.users, self.seconds, self.generated, self.invalid, self.repeated = 0, 0.0, 0, 0, 0

    def add_exact(self, users: int, seconds: float) -> None:
        """Users ranked by exact scores over the existing items: their top ``beams`` are valid and distinct by
        construction, so there is nothing to count item by item."""
        self.users += users
        self.seconds += seconds
        self.generated += users * self.beams

    def add(self, items: torch.Tensor, n_items: int, seconds: float) -> None:
        self.users += len(items)
        self.seconds += seconds
        for row in items.tolist():
            found = [item for item in row if item >= 0]
            self.generated += len(found)
            self.invalid += sum(not 0 < item < n_items for item in found)
            self.repeated += len(found) - len(set(found))

    def gather(self) -> None:
        """Sum the counts of all processes (each decoded its own users, side by side: the slowest one's time)."""
        counts = all_reduce([self.users, self.generated, self.invalid, self.repeated])
        self.users, self.generated, self.invalid, self.repeated = (int(c) for c in counts)
        self.seconds = all_reduce([self.seconds], ReduceOp.MAX)[0]

    def as_dict(self) -> dict:
        return {"beams": self.beams, "users": self.users, "seconds": round(self.seconds, 3),
                "users_per_second": round(self.users / self.seconds, 2) if self.seconds else None,
                "generated_items": self.generated,
                "invalid_share": self.invalid / self.generated if self.generated else 0.0,
                "repeated_share": self.repeated / self.generated if self.generated else 0.0}
