"""Write the tiny data set the tests run on (``python tests/data/make_tiny.py``; the files are committed).

60 items in 6 genres of 10; each of 120 users mostly walks through one genre in order (item k -> item k+1), so a
sequential model can learn the next item and a content model can see the genres. Item 60 has no text (a masked
modality); item 59 occurs only as some users' last item, never in the training split (a cold-start item).
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from recbole_cemg.data.features import save_item_features  # noqa: E402

GENRES, PER_GENRE, USERS = 6, 10, 120
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny")


def main() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for user in range(1, USERS + 1):
        genre = rng.integers(GENRES)
        length = int(rng.integers(8, 15))
        position = int(rng.integers(PER_GENRE))
        for t in range(length):
            if rng.random() < 0.85:
                position = (position + 1) % PER_GENRE
            else:
                position = int(rng.integers(PER_GENRE))
            item = genre * PER_GENRE + position + 1
            if item == 59 and t < length - 1:  # keep item 59 out of training: it may only be a test target
                item = 58
            rows.append((user, item, t))
    for user in range(1, 4):  # three users whose test target is the cold item 59
        last = max(i for i, r in enumerate(rows) if r[0] == user)
        rows[last] = (user, 59, rows[last][2])
    os.makedirs(HERE, exist_ok=True)
    with open(os.path.join(HERE, "tiny.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"u{u}\ti{i}\t{t}\n" for u, i, t in rows)
    with open(os.path.join(HERE, "tiny.item"), "w", encoding="utf-8") as f:
        f.write("item_id:token\ttitle:token_seq\tgenre:token\n")
        for item in range(1, GENRES * PER_GENRE + 1):
            f.write(f"i{item}\tthing number {item}\tg{(item - 1) // PER_GENRE}\n")
    genre_vectors = rng.normal(size=(GENRES, 16))
    tokens = [f"i{item}" for item in range(1, GENRES * PER_GENRE)]  # item 60 has no text features
    features = np.stack([genre_vectors[(item - 1) // PER_GENRE] + 0.3 * rng.normal(size=16)
                         for item in range(1, GENRES * PER_GENRE)]).astype(np.float32)
    save_item_features(os.path.join(HERE, "tiny.text.npz"), tokens, features, encoder="synthetic:genre+noise")


if __name__ == "__main__":
    main()
