"""Convert Amazon review data (2014, 2018 or 2023 release) into RecBole atomic files for CEMG, offline.

Input formats, detected from the review file's name (or forced with ``--format``):

``2014``  ``reviews_<Category>_5.json.gz`` (JSON lines: reviewerID, asin, unixReviewTime, overall) and
          ``meta_<Category>.json.gz`` (one Python dict literal per line: asin, title, brand, categories, description,
          imUrl);
``2018``  ``<Category>.json.gz`` or ``<Category>_5.json.gz`` (JSON lines: reviewerID, asin, unixReviewTime, overall)
          and ``meta_<Category>.json.gz`` (JSON lines: asin, title, brand, category, description, image);
``2023``  ``<Category>.jsonl.gz`` (user_id, parent_asin, timestamp in milliseconds, rating) and
          ``meta_<Category>.jsonl.gz`` (parent_asin, title, store, categories, description, images).

Steps: parse (malformed lines are counted, logged and listed in the summary, never dropped silently), remove
duplicate (user, item, timestamp) interactions, iterative k-core filtering of users and items (``--kcore``), sort by
time (stable: ties keep the order of the raw file). Outputs, each written atomically:

``<out>/<name>/<name>.inter``         ``user_id:token  item_id:token  rating:float  timestamp:float`` (seconds);
``<out>/<name>/<name>.item``          ``item_id:token  title:token_seq  brand:token  categories:token_seq
                                      description:token_seq``, one row per kept item (empty cells without metadata);
``<out>/<name>/<name>.images.tsv``    ``item_id  url``: the item's first image URL, or empty (see download_images.py);
``<out>/<name>/<name>.summary.json``  counts before and after each step, malformed lines, items without metadata;
``<out>/<name>.yaml``                 a dataset config for RecBole / CEMG.

Text cells are made safe for RecBole's reader (tab-separated, token_seq split on single spaces): HTML tags and
entities are removed, all whitespace is collapsed to single spaces and double quotes become two single quotes.
Multi-word categories are joined with underscores (``Skin_Care``) so each category stays one token.

Example::

    python dataset_scripts/convert_amazon.py --reviews raw/reviews_Beauty_5.json.gz --out dataset --name Beauty14
"""

from __future__ import annotations

import argparse
import ast
import gzip
import html
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing the plugin
from recbole_cemg.errors import UserError, add_debug_flag, command_line  # noqa: E402
from recbole_cemg.io import atomic_write  # noqa: E402

logger = logging.getLogger("convert_amazon")

FORMATS = ("2014", "2018", "2023")
INTER_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
ITEM_HEADER = ["item_id:token", "title:token_seq", "brand:token", "categories:token_seq", "description:token_seq"]
MAX_LOGGED_MALFORMED = 5  # per file; the summary keeps up to MAX_LISTED_MALFORMED line numbers
MAX_LISTED_MALFORMED = 100


class ConvertError(UserError):
    """A problem the user can fix; ``main`` reports it without a traceback."""


# ---------------------------------------------------------------------------------------------------------------- names
def detect_format(reviews: str) -> str:
    """The release a review file belongs to, from its name."""
    name = os.path.basename(reviews)
    if re.search(r"\.jsonl(\.gz)?$", name):
        return "2023"
    if name.startswith("reviews_"):
        return "2014"
    if re.search(r"\.json(\.gz)?$", name):
        return "2018"
    raise ConvertError(f"Cannot tell the Amazon release of '{name}': expected reviews_<Category>_5.json.gz (2014), "
                       "<Category>[_5].json.gz (2018) or <Category>.jsonl.gz (2023). Pass --format.")


def category_of(reviews: str, fmt: str) -> str:
    """``Beauty`` from ``reviews_Beauty_5.json.gz``, ``All_Beauty_5.json.gz`` or ``All_Beauty.jsonl.gz``."""
    name = re.sub(r"\.jsonl?(\.gz)?$", "", os.path.basename(reviews))
    if fmt == "2014":
        name = name.removeprefix("reviews_")
    return re.sub(r"_5$", "", name) if fmt != "2023" else name


def default_meta(reviews: str, fmt: str) -> str:
    """The metadata file that sits beside the review file in the official release."""
    suffix = ".jsonl.gz" if fmt == "2023" else ".json.gz"
    if not reviews.endswith(".gz"):
        suffix = suffix.removesuffix(".gz")
    return os.path.join(os.path.dirname(reviews), f"meta_{category_of(reviews, fmt)}{suffix}")


# -------------------------------------------------------------------------------------------------------------- parsing
def open_text(path: str, newline: str | None = None):
    """A text handle on a plain or gzip-compressed file (a UTF-8 byte-order mark is dropped); ``newline=""`` for csv."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline=newline)
    return open(path, encoding="utf-8-sig", errors="replace", newline=newline)


def parse_line(line: str, python_literal: bool) -> Any:
    """One record: Python literal first for the 2014 metadata, JSON first otherwise; the other as fallback."""
    parsers = (ast.literal_eval, json.loads) if python_literal else (json.loads, ast.literal_eval)
    for parse in parsers:
        try:
            return parse(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    raise ValueError("neither JSON nor a Python literal")


class Malformed:
    """Malformed lines of one file: counted, the first few logged, line numbers kept for the summary."""

    def __init__(self, path: str) -> None:
        self.path, self.count, self.lines = path, 0, []

    def add(self, number: int, reason: str, line: str) -> None:
        self.count += 1
        if len(self.lines) < MAX_LISTED_MALFORMED:
            self.lines.append({"line": number, "reason": reason})
        if self.count <= MAX_LOGGED_MALFORMED:
            logger.warning(f"{self.path}:{number}: malformed line skipped ({reason}): {line[:120]!r}")

    def report(self) -> dict:
        if self.count > MAX_LOGGED_MALFORMED:
            logger.warning(f"{self.path}: {self.count} malformed lines in all (first {MAX_LOGGED_MALFORMED} shown)")
        return {"file": self.path, "count": self.count, "first_lines": self.lines}


def read_records(path: str, python_literal: bool, malformed: Malformed, desc: str) -> Iterator[tuple[int, dict]]:
    """(line number, record) for every parsable non-empty line that is a dict; the others go to ``malformed``."""
    if not os.path.isfile(path):
        raise ConvertError(f"File not found: {path}")
    with open_text(path) as f:
        for number, line in enumerate(tqdm(f, desc=desc, unit=" lines", mininterval=1.0), start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = parse_line(line, python_literal)
            except ValueError as error:
                malformed.add(number, str(error), line)
                continue
            if not isinstance(record, dict):
                malformed.add(number, f"a {type(record).__name__}, not an object", line)
                continue
            yield number, record


REVIEW_KEYS = {"2014": ("reviewerID", "asin", "unixReviewTime", "overall"),
               "2018": ("reviewerID", "asin", "unixReviewTime", "overall"),
               "2023": ("user_id", "parent_asin", "timestamp", "rating")}


def read_reviews(path: str, fmt: str) -> tuple[list[tuple[str, str, float, float]], dict]:
    """Interactions (user, item, rating, timestamp in seconds) in file order, and the malformed-line report."""
    user_key, item_key, time_key, rating_key = REVIEW_KEYS[fmt]
    malformed = Malformed(path)
    rows = []
    for number, record in read_records(path, False, malformed, "reviews"):
        user, item = record.get(user_key), record.get(item_key)
        if not user or not item or not isinstance(user, str) or not isinstance(item, str):
            malformed.add(number, f"missing '{user_key}' or '{item_key}'", json.dumps(record)[:120])
            continue
        try:
            timestamp = float(record[time_key])
            rating = float(record.get(rating_key) if record.get(rating_key) is not None else "nan")
        except (KeyError, TypeError, ValueError):
            malformed.add(number, f"missing or non-numeric '{time_key}'", json.dumps(record)[:120])
            continue
        if timestamp != timestamp:
            malformed.add(number, f"'{time_key}' is NaN", json.dumps(record)[:120])
            continue
        if fmt == "2023":
            timestamp /= 1000.0  # milliseconds
        rows.append((clean_token(user), clean_token(item), rating, timestamp))
    return rows, malformed.report()


# ---------------------------------------------------------------------------------------------------------- filtering
def deduplicate(rows: list[tuple]) -> list[tuple]:
    """Drop repeated (user, item, timestamp) interactions, keeping the first; rows are (user, item, ..., timestamp)."""
    seen, kept = set(), []
    for row in rows:
        key = (row[0], row[1], row[-1])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def kcore(rows: list[tuple], k: int) -> tuple[list[tuple], int]:
    """Iteratively drop users and items with fewer than ``k`` interactions; the kept rows and the rounds needed."""
    rounds = 0
    while k > 1:
        users = Counter(row[0] for row in rows)
        items = Counter(row[1] for row in rows)
        kept = [row for row in rows if users[row[0]] >= k and items[row[1]] >= k]
        rounds += 1
        if len(kept) == len(rows):
            break
        rows = kept
    return rows, rounds


def filter_interactions(rows: list[tuple], k: int, summary: dict[str, Any]) -> list[tuple]:
    """Duplicates removed, iterative k-core, then time order (the last column; stable, so ties keep the file's
    order). The counts after each step go into ``summary``."""
    rows = deduplicate(rows)
    summary["deduplicated"] = counts(rows)
    logger.info(f"parsed {summary['parsed']}; {summary['parsed']['interactions'] - len(rows)} duplicate "
                "(user, item, timestamp) interactions removed")
    rows, rounds = kcore(rows, k)
    summary["kcore_rounds"] = rounds
    summary["after_kcore"] = counts(rows)
    logger.info(f"{k}-core after {rounds} round(s): {summary['after_kcore']}")
    if not rows:
        raise ConvertError(f"No interaction is left after {k}-core filtering; lower --kcore.")
    return sorted(rows, key=lambda row: row[-1])


def counts(rows: list[tuple]) -> dict:
    return {"interactions": len(rows), "users": len({r[0] for r in rows}), "items": len({r[1] for r in rows})}


# ----------------------------------------------------------------------------------------------------------- metadata
TAG = re.compile(r"<[^>]*>")


def clean_text(value: Any) -> str:
    """Readable single-line text safe for a RecBole cell: no HTML, tabs, newlines or double quotes."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(clean_text(v) for v in value)
    text = TAG.sub(" ", html.unescape(str(value)))
    return " ".join(text.replace('"', "''").split())


def clean_token(value: Any) -> str:
    """A single token: cleaned text with spaces kept (a token cell may hold spaces), no tabs or newlines."""
    return clean_text(value)


def category_tokens(value: Any) -> str:
    """Categories (a list, or the 2014 list of lists) as unique tokens, words of one category joined by ``_``."""
    flat: list = []

    def walk(v):
        if isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        elif v is not None:
            flat.append(v)

    walk(value)
    tokens = [clean_text(c).replace(" ", "_") for c in flat]
    return " ".join(dict.fromkeys(t for t in tokens if t))


def first_image(record: dict, fmt: str) -> str:
    """The first image URL of a metadata record, or ``""``."""
    if fmt == "2014":
        url = record.get("imUrl") or ""
    elif fmt == "2018":
        images = record.get("image") or record.get("imageURLHighRes") or []
        url = images[0] if isinstance(images, list) and images else images if isinstance(images, str) else ""
    else:
        url = ""
        for image in record.get("images") or []:
            if isinstance(image, dict):
                url = image.get("large") or image.get("hi_res") or image.get("thumb") or ""
            elif isinstance(image, str):
                url = image
            if url:
                break
    return "".join(str(url).split())


def item_row(record: dict, fmt: str) -> tuple[list[str], str]:
    """The .item cells (without the id) and the first image URL of a metadata record."""
    brand = record.get("store") if fmt == "2023" else record.get("brand")
    categories = record.get("categories") if fmt in ("2014", "2023") else record.get("category")
    cells = [clean_text(record.get("title")), clean_token(brand), category_tokens(categories),
             clean_text(record.get("description"))]
    return cells, first_image(record, fmt)


def read_meta(path: str, fmt: str, wanted: set[str]) -> tuple[dict[str, tuple[list[str], str]], dict]:
    """Metadata of the ``wanted`` items (first record per item), and the malformed-line report."""
    id_key = "parent_asin" if fmt == "2023" else "asin"
    malformed = Malformed(path)
    meta: dict[str, tuple[list[str], str]] = {}
    for number, record in read_records(path, fmt == "2014", malformed, "metadata"):
        item = record.get(id_key)
        if not item or not isinstance(item, str):
            malformed.add(number, f"missing '{id_key}'", repr(record)[:120])
            continue
        item = clean_token(item)
        if item in wanted and item not in meta:
            meta[item] = item_row(record, fmt)
    return meta, malformed.report()


# ------------------------------------------------------------------------------------------------------------- output
def write_tsv(path: str, header: Sequence[str], rows) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(row) + "\n")


def format_float(value: float) -> str:
    return "" if value != value else repr(float(value)).removesuffix(".0")


def dataset_yaml(name: str, fmt: str, category: str, k: int) -> str:
    return f"""# Amazon {fmt} '{category}', {k}-core, made by dataset_scripts/convert_amazon.py (see {name}/{name}.summary.json).
# Use it with data_path=<the folder holding this file>, dataset={name}, config_file_list=[<this file>].
load_col:
  inter: [user_id, item_id, rating, timestamp]
  item: [item_id, title, brand, categories]
# {name}.item also holds `description` (long: left out of RecBole's vocabulary); text features are built from it by
#   python dataset_scripts/encode_text.py --dataset {name} --data_path <this folder>/{name} --encoder ...
# which writes {name}/{name}.text.npz, the default place CEMG reads it from.
modalities: [text]
# Image features: fetch the images listed in {name}/{name}.images.tsv and encode them,
#   python dataset_scripts/download_images.py --images_tsv <this folder>/{name}/{name}.images.tsv --out_dir images/{name}
#   python dataset_scripts/encode_images.py --image_dir images/{name} --output <this folder>/{name}/{name}.image.npz \\
#       --model ViT-B-32 --pretrained laion2b_s34b_b79k
# then set `modalities: [text, image]` (items without an image are masked for that modality).
"""


def convert(reviews: str, meta: str | None, out: str, name: str | None, fmt: str | None, k: int) -> dict:
    """Run every step and write the outputs; returns the summary."""
    fmt = fmt or detect_format(reviews)
    category = category_of(reviews, fmt)
    name = name or category
    meta = meta or default_meta(reviews, fmt)
    if not os.path.isfile(reviews):
        raise ConvertError(f"Review file not found: {reviews}")
    logger.info(f"Amazon {fmt} '{category}': reviews {reviews}, metadata {meta}")

    rows, review_report = read_reviews(reviews, fmt)
    if not rows:
        raise ConvertError(f"{reviews}: no usable interaction ({review_report['count']} malformed lines).")
    summary: dict[str, Any] = {"format": fmt, "category": category, "name": name, "kcore": k,
                               "reviews": reviews, "meta": meta, "parsed": counts(rows)}
    rows = filter_interactions(rows, k, summary)

    items = list(dict.fromkeys(row[1] for row in rows))
    if os.path.isfile(meta):
        item_meta, meta_report = read_meta(meta, fmt, set(items))
    else:
        logger.warning(f"Metadata file not found: {meta}; the .item file will only list the item ids.")
        item_meta, meta_report = {}, {"file": meta, "count": 0, "first_lines": [], "missing_file": True}
    summary["malformed"] = {"reviews": review_report, "meta": meta_report}
    summary["items_without_meta"] = sum(item not in item_meta for item in items)
    summary["items_with_image_url"] = sum(bool(item_meta.get(item, ([], ""))[1]) for item in items)

    folder = os.path.join(out, name)
    write_tsv(os.path.join(folder, f"{name}.inter"), INTER_HEADER,
              ((u, i, format_float(r), format_float(t)) for u, i, r, t in rows))
    empty = (["", "", "", ""], "")
    write_tsv(os.path.join(folder, f"{name}.item"), ITEM_HEADER,
              ([item, *item_meta.get(item, empty)[0]] for item in items))
    write_tsv(os.path.join(folder, f"{name}.images.tsv"), ["item_id", "url"],
              ((item, item_meta.get(item, empty)[1]) for item in items))
    with atomic_write(os.path.join(folder, f"{name}.summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    with atomic_write(os.path.join(out, f"{name}.yaml"), "w", encoding="utf-8") as f:
        f.write(dataset_yaml(name, fmt, category, k))
    logger.info(f"wrote {folder}/{name}.inter/.item/.images.tsv/.summary.json and {out}/{name}.yaml: "
                f"{summary['after_kcore']}, {summary['items_without_meta']} items without metadata, "
                f"{summary['items_with_image_url']} with an image URL, malformed lines: "
                f"{review_report['count']} in reviews, {meta_report['count']} in metadata")
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", required=True, help="the review file (.json[l][.gz])")
    parser.add_argument("--meta", help="the metadata file (default: meta_<Category>... beside the review file)")
    parser.add_argument("--out", default="dataset", help="output folder (default: dataset)")
    parser.add_argument("--name", help="dataset name (default: the category)")
    parser.add_argument("--format", choices=FORMATS, help="Amazon release (default: detected from the file name)")
    parser.add_argument("--kcore", type=int, default=5, help="min interactions per user and item (default: 5)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


@command_line("convert_amazon")
def main(argv: Sequence[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    return convert(args.reviews, args.meta, args.out, args.name, args.format, args.kcore)


if __name__ == "__main__":
    main()
