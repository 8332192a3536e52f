"""Convert a local catalogue (interactions + item table + image folder or zip) into RecBole atomic files for CEMG.

Public data rarely comes as Amazon review dumps: a shop has a table of purchases or clicks, a table of articles and a
folder (or zip) of product photos named after the article ids. This script turns such files into what the plugin
reads, offline, with the same steps and guarantees as convert_amazon.py (whose functions it reuses):

* interactions: a CSV or TSV file (``--sep``, or detected from ``.csv`` / ``.tsv`` / ``.tab``, optionally ``.gz``)
  with a header; user, item and time columns are named by flags. Time is a number (``--time_format numeric``), a
  date in ``strptime`` format (``--time_format %Y-%m-%d``; naive dates are UTC) or, by default, either of the two
  (ISO 8601). Without ``--time_col`` the position in the file is the timestamp;
* malformed rows (missing user or item, unparsable time, a wrong number of cells) are counted, logged and listed in
  the summary, never dropped silently;
* ids keep their raw string (``0108775015`` stays ``0108775015``);
* duplicate (user, item, timestamp) interactions are removed, users and items are k-core filtered (``--kcore``, 0 or
  1 for none), rows are sorted by time (stable: ties keep the file's order);
* the item table (optional) gives the text columns (``--item_text_cols``); items without a row in it keep empty
  cells, so their text modality is masked later;
* images (optional) are taken from a folder (searched recursively) or a zip, matched by file name ``<item id>.<ext>``,
  and copied only for kept items. Every image must fully decode: a corrupt one is reported by item id and not copied
  (the image modality is masked for that item). Reruns are resumable: an existing image that decodes is skipped.

Outputs, each written atomically:

``<out>/<name>/<name>.inter``            ``user_id:token  item_id:token  timestamp:float``;
``<out>/<name>/<name>.item``             ``item_id:token`` and one ``<column>:token_seq`` per text column, one row per
                                         kept item (encode_text.py joins the columns as ``a | b | c``);
``<out>/<name>/images/<item id>.<ext>``  the kept items' images (names percent-encoded as by download_images.py), and
                                         nothing else: images of items no longer kept are removed;
``<out>/<name>/<name>.item_report.tsv``  ``item_id  image  metadata  detail`` for each item lacking an image (missing
                                         or broken) or metadata;
``<out>/<name>/<name>.summary.json``     counts before and after each step, malformed rows, image and metadata counts;
``<out>/<name>.yaml``                    a dataset config for RecBole / CEMG, with the feature commands.

Example (the H&M sample)::

    python dataset_scripts/convert_local.py --name hm --out dataset \\
        --interactions raw/transactions_train_sample.csv --user_col customer_id --item_col article_id \\
        --time_col t_dat --time_format %Y-%m-%d \\
        --items raw/articles_sample.csv --item_text_cols prod_name,product_type_name,colour_group_name,detail_desc \\
        --images raw/images_64x96.zip
"""

from __future__ import annotations

import argparse
import calendar
import csv
import json
import logging
import math
import os
import re
import sys
import zipfile
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing the plugin
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling scripts
from convert_amazon import (MAX_LISTED_MALFORMED, ConvertError, Malformed, clean_text, clean_token,  # noqa: E402
                            counts, filter_interactions, format_float, open_text, write_tsv)
from download_images import IMAGE_EXTENSIONS, decode, existing_image, file_stem  # noqa: E402

from recbole_cemg.errors import add_debug_flag, command_line  # noqa: E402
from recbole_cemg.io import atomic_write  # noqa: E402

logger = logging.getLogger("convert_local")

INTER_HEADER = ["user_id:token", "item_id:token", "timestamp:float"]
SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
# The suffixes encode_images.py reads (not imported from it: that would load torch; a test keeps the two equal).
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


# ------------------------------------------------------------------------------------------------------------- tables
def separator(path: str, sep: str | None) -> str:
    """The cell separator: ``--sep`` (``\\t`` and ``tab`` mean a tab), else from the file's extension."""
    if sep:
        return "\t" if sep in ("\\t", "tab") else sep
    suffix = Path(path.removesuffix(".gz")).suffix.lower()
    if suffix not in SEPARATORS:
        raise ConvertError(f"Cannot tell the separator of '{path}' from its extension (expected .csv, .tsv or .tab, "
                           "optionally .gz). Pass --sep (e.g. --sep ';' or --sep tab).")
    return SEPARATORS[suffix]


def read_table(path: str, sep: str, needed: Sequence[str], flags: dict[str, str], malformed: Malformed,
               desc: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: stripped cell}) for each well-formed row; rows with a wrong cell count go to
    ``malformed``. ``flags`` names the command-line flag of each needed column, for the error message."""
    if not os.path.isfile(path):
        raise ConvertError(f"File not found: {path}")
    csv.field_size_limit(2**31 - 1)
    with open_text(path, newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, None)
        if not header:
            raise ConvertError(f"{path} is empty; expected a header line naming the columns.")
        header = [cell.strip() for cell in header]
        missing = [column for column in needed if column not in header]
        if missing:
            which = ", ".join(f"'{c}' ({flags.get(c, 'column')})" for c in missing)
            raise ConvertError(f"{path}: no column {which}; the header has {header} (separator {sep!r}). "
                               "Name the right columns with the flags, or set --sep.")
        for cells in tqdm(reader, desc=desc, unit=" rows", mininterval=1.0):
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                malformed.add(reader.line_num, f"{len(cells)} cells, the header has {len(header)}", sep.join(cells))
                continue
            yield reader.line_num, {column: cell.strip() for column, cell in zip(header, cells, strict=True)}


def parse_time(value: str, time_format: str) -> float:
    """Seconds since the epoch of a cell; ``ValueError`` if it is empty, not finite or does not match the format."""
    if not value:
        raise ValueError("empty")
    if time_format in ("numeric", "auto"):
        try:
            seconds = float(value)
        except ValueError:
            if time_format == "numeric":
                raise ValueError("not a number") from None
            when = datetime.fromisoformat(value)  # ValueError names the value
        else:
            if not math.isfinite(seconds):
                raise ValueError("not finite")
            return seconds
    else:
        when = datetime.strptime(value, time_format)
    if when.tzinfo is None:
        return float(calendar.timegm(when.timetuple())) + when.microsecond / 1e6  # naive dates are UTC
    return when.timestamp()


def read_interactions(path: str, sep: str, user_col: str, item_col: str, time_col: str | None,
                      time_format: str) -> tuple[list[tuple[str, str, float]], dict]:
    """(user, item, timestamp) in file order, and the malformed-row report."""
    malformed = Malformed(path)
    needed = [user_col, item_col] + ([time_col] if time_col else [])
    flags = {user_col: "--user_col", item_col: "--item_col", time_col or "": "--time_col"}
    rows = []
    for number, row in read_table(path, sep, needed, flags, malformed, "interactions"):
        user, item = clean_token(row[user_col]), clean_token(row[item_col])
        if not user or not item:
            malformed.add(number, f"missing '{user_col}' or '{item_col}'", sep.join(row.values()))
            continue
        if time_col is None:
            timestamp = float(len(rows))
        else:
            try:
                timestamp = parse_time(row[time_col], time_format)
            except ValueError as error:
                malformed.add(number, f"unparsable '{time_col}' {row[time_col]!r} for --time_format {time_format} "
                                      f"({error})", sep.join(row.values()))
                continue
        rows.append((user, item, timestamp))
    return rows, malformed.report()


def read_items(path: str, sep: str, id_col: str, text_cols: Sequence[str],
               wanted: set[str]) -> tuple[dict[str, list[str]], dict, int]:
    """Cleaned text cells of the ``wanted`` items (first row per item), the malformed-row report and the number of
    repeated rows of a wanted item (ignored)."""
    malformed = Malformed(path)
    flags = {id_col: "--item_id_col", **{c: "--item_text_cols" for c in text_cols}}
    meta: dict[str, list[str]] = {}
    repeated = 0
    for number, row in read_table(path, sep, [id_col, *text_cols], flags, malformed, "items"):
        item = clean_token(row[id_col])
        if not item:
            malformed.add(number, f"missing '{id_col}'", sep.join(row.values()))
            continue
        if item in wanted:
            if item in meta:
                repeated += 1
                continue
            meta[item] = [clean_text(row[c]) for c in text_cols]
    if repeated:
        logger.warning(f"{path}: {repeated} repeated row(s) of kept items ignored (the first row of each is used)")
    return meta, malformed.report(), repeated


# ------------------------------------------------------------------------------------------------------------- images
class ImageSource:
    """Image files named ``<item id>.<ext>`` in a folder (recursively) or a zip, indexed by file stem."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.index: dict[str, str] = {}
        self.zip: zipfile.ZipFile | None = None
        if os.path.isdir(path):
            self.kind = "folder"
            names = sorted(os.path.join(root, name) for root, dirs, files in os.walk(path) for name in files
                           if not any(part.startswith(".") for part in Path(root).relative_to(path).parts))
        elif zipfile.is_zipfile(path):
            self.kind = "zip"
            self.zip = zipfile.ZipFile(path)
            names = sorted(info.filename for info in self.zip.infolist()
                           if not info.is_dir() and not info.filename.startswith("__MACOSX/"))
        else:
            raise ConvertError(f"--images {path}: neither a folder nor a zip file. Give the folder (or .zip) holding "
                               "one <item id>.<ext> image per item.")
        duplicates = 0
        for name in names:
            stem, suffix = os.path.splitext(os.path.basename(name))
            if stem.startswith(".") or suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if stem in self.index:
                duplicates += 1
                if duplicates <= 5:
                    logger.warning(f"{path}: several images for '{stem}'; using {self.index[stem]}, ignoring {name}")
                continue
            self.index[stem] = name
        self.duplicates = duplicates
        logger.info(f"{len(self.index)} images in {self.kind} {path}")

    def find(self, item: str) -> str | None:
        """The file of ``item``: named by the raw id, or by its percent-encoded form."""
        return self.index.get(item) or self.index.get(file_stem(item))

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(name)
        with open(name, "rb") as f:
            return f.read()

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def copy_images(source: ImageSource, items: list[str], images_dir: str) -> tuple[dict[str, str], dict[str, str],
                                                                                  dict]:
    """Copy the valid image of each item into ``images_dir``; (status by item, detail by item, counts).

    Status is ``copied``, ``skipped`` (a valid copy is already there), ``missing`` or ``broken``. Afterwards the folder
    holds exactly the valid images of ``items``: leftovers (items no longer kept, broken earlier copies) are removed.
    """
    if os.path.realpath(source.path) == os.path.realpath(images_dir):
        raise ConvertError(f"--images {source.path} is the output image folder itself; give the original images.")
    os.makedirs(images_dir, exist_ok=True)
    status: dict[str, str] = {}
    detail: dict[str, str] = {}
    kept_files: set[str] = set()
    for item in tqdm(items, desc="images", unit="img", mininterval=1.0):
        existing = existing_image(images_dir, item)
        if existing:
            status[item] = "skipped"
            kept_files.add(os.path.basename(existing))
            continue
        name = source.find(item)
        if name is None:
            status[item] = "missing"
            continue
        data = source.read(name)
        try:
            fmt = decode(data)
        except ValueError as error:
            status[item], detail[item] = "broken", f"{name}: {error}"
            logger.warning(f"item '{item}': corrupt image {name} not copied ({error})")
            continue
        target = file_stem(item) + IMAGE_EXTENSIONS.get(fmt, f".{fmt.lower() or 'img'}")
        with atomic_write(os.path.join(images_dir, target)) as f:
            f.write(data)
        status[item] = "copied"
        kept_files.add(target)
    removed = 0
    for name in sorted(os.listdir(images_dir)):
        if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and name not in kept_files and \
                not name.startswith("."):
            os.remove(os.path.join(images_dir, name))
            removed += 1
    if removed:
        logger.info(f"removed {removed} image(s) from {images_dir} that belong to no kept item or do not decode")
    values = list(status.values())
    summary = {"source": source.path, "kind": source.kind, "files_in_source": len(source.index),
               "duplicate_names_in_source": source.duplicates,
               **{s: values.count(s) for s in ("copied", "skipped", "missing", "broken")},
               "removed_from_output": removed,
               "broken_items": [item for item in items if status[item] == "broken"][:MAX_LISTED_MALFORMED]}
    return status, detail, summary


# ------------------------------------------------------------------------------------------------------------- output
def field_name(column: str) -> str:
    """A RecBole field name for a source column: word characters only (``colour group`` -> ``colour_group``)."""
    return re.sub(r"\W+", "_", column).strip("_") or "text"


def dataset_yaml(name: str, out: str, k: int, text_fields: list[str], n_images: int, summary: dict) -> str:
    folder = os.path.join(out, name)
    modalities = (["text"] if summary["items_with_meta"] else []) + (["image"] if n_images else [])
    lines = [f"# Local catalogue '{name}', {k}-core, made by dataset_scripts/convert_local.py "
             f"(see {name}/{name}.summary.json).",
             f"# Use it with data_path=<the folder holding this file>, dataset={name}, config_file_list=[<this file>].",
             "load_col:",
             "  inter: [user_id, item_id, timestamp]"]
    if text_fields:
        lines += [f"# {name}.item holds the text columns {text_fields} ({summary['items_with_meta']} of "
                  f"{summary['after_kcore']['items']} items have metadata); text features come from",
                  f"#   python dataset_scripts/encode_text.py --dataset {name} --data_path {folder} \\",
                  "#       --encoder hf:sentence-transformers/all-MiniLM-L6-v2 --normalize --fp16",
                  f"# which writes {folder}/{name}.text.npz, the default place CEMG reads it from."]
    if n_images:
        lines += [f"# {n_images} items have an image in {folder}/images; image features come from",
                  f"#   python dataset_scripts/encode_images.py --image_dir {folder}/images --dataset {name} "
                  f"--data_path {folder} \\",
                  "#       --model ViT-B-32 --pretrained laion2b_s34b_b79k --normalize --fp16",
                  "# (or --pretrained <a local open_clip checkpoint file>)."]
    lines += ["# Items without text or image are masked for that modality. Make the feature files before a run.",
              f"modalities: [{', '.join(modalities)}]", ""]
    return "\n".join(lines)


def convert(args: argparse.Namespace) -> dict:
    """Run every step and write the outputs; returns the summary."""
    name, out, k = args.name, args.out, args.kcore
    if not re.fullmatch(r"[\w.-]+", name):
        raise ConvertError(f"--name '{name}': use letters, digits, '_', '-' or '.' (it names files and folders).")
    text_cols = [c.strip() for c in (args.item_text_cols or "").split(",") if c.strip()]
    if args.items and not text_cols:
        raise ConvertError("--items needs --item_text_cols, the comma-separated columns that describe an item.")
    if text_cols and not args.items:
        raise ConvertError("--item_text_cols needs --items, the item table.")
    text_fields = [field_name(c) for c in text_cols]
    if len(set(text_fields)) != len(text_fields) or "item_id" in text_fields:
        raise ConvertError(f"--item_text_cols {text_cols} give repeated field names {text_fields}.")
    if args.images and not os.path.exists(args.images):
        raise ConvertError(f"Image folder or zip not found: {args.images}")

    sep = separator(args.interactions, args.sep)
    rows, inter_report = read_interactions(args.interactions, sep, args.user_col, args.item_col, args.time_col,
                                           args.time_format)
    if not rows:
        raise ConvertError(f"{args.interactions}: no usable interaction ({inter_report['count']} malformed rows).")
    summary: dict[str, Any] = {"format": "local", "name": name, "kcore": k, "interactions": args.interactions,
                               "columns": {"user": args.user_col, "item": args.item_col, "time": args.time_col,
                                           "time_format": args.time_format if args.time_col else "file order"},
                               "items": args.items, "item_text_cols": text_cols, "images": args.images,
                               "parsed": counts(rows)}
    logger.info(f"{inter_report['count']} malformed rows")
    rows = filter_interactions(rows, k, summary)
    items = list(dict.fromkeys(row[1] for row in rows))

    item_meta: dict[str, list[str]] = {}
    items_report = None
    if args.items:
        item_meta, items_report, repeated = read_items(args.items, separator(args.items, args.sep),
                                                       args.item_id_col or args.item_col, text_cols, set(items))
        summary["item_rows_repeated"] = repeated
    summary["malformed"] = {"interactions": inter_report, "items": items_report}
    summary["items_with_meta"] = sum(item in item_meta for item in items)
    summary["items_without_meta"] = len(items) - summary["items_with_meta"] if args.items else None

    folder = os.path.join(out, name)
    status: dict[str, str] = {}
    detail: dict[str, str] = {}
    summary["image_copy"] = None
    if args.images:
        source = ImageSource(args.images)
        try:
            status, detail, summary["image_copy"] = copy_images(source, items, os.path.join(folder, "images"))
        finally:
            source.close()
    n_images = sum(s in ("copied", "skipped") for s in status.values())
    summary["items_with_image"] = n_images
    summary["items_without_image"] = len(items) - n_images if args.images else None

    write_tsv(os.path.join(folder, f"{name}.inter"), INTER_HEADER,
              ((u, i, format_float(t)) for u, i, t in rows))
    empty = [""] * len(text_cols)
    write_tsv(os.path.join(folder, f"{name}.item"), ["item_id:token"] + [f"{f}:token_seq" for f in text_fields],
              ([item, *item_meta.get(item, empty)] for item in items))
    lacking = []
    for item in items:
        image = ("ok" if status[item] in ("copied", "skipped") else status[item]) if args.images else "none given"
        metadata = ("yes" if item in item_meta else "no") if args.items else "none given"
        if image not in ("ok", "none given") or metadata == "no":
            lacking.append([item, image, metadata, " ".join(detail.get(item, "").split())])
    write_tsv(os.path.join(folder, f"{name}.item_report.tsv"), ["item_id", "image", "metadata", "detail"], lacking)
    summary["items_lacking_image_or_meta"] = len(lacking)
    with atomic_write(os.path.join(folder, f"{name}.summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    with atomic_write(os.path.join(out, f"{name}.yaml"), "w", encoding="utf-8") as f:
        f.write(dataset_yaml(name, out, k, text_fields, n_images, summary))
    image_copy = summary["image_copy"] or {}
    logger.info(f"wrote {folder}/{name}.inter/.item/.item_report.tsv/.summary.json and {out}/{name}.yaml: "
                f"{summary['after_kcore']}; metadata for {summary['items_with_meta']} items; images: "
                f"{image_copy.get('copied', 0)} copied, {image_copy.get('skipped', 0)} already there, "
                f"{image_copy.get('missing', 0)} missing, {image_copy.get('broken', 0)} broken; malformed rows: "
                f"{inter_report['count']} in interactions, {(items_report or {}).get('count', 0)} in items")
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    inter = parser.add_argument_group("interactions")
    inter.add_argument("--interactions", required=True, help="CSV/TSV file of interactions, with a header")
    inter.add_argument("--user_col", required=True, help="its user id column")
    inter.add_argument("--item_col", required=True, help="its item id column")
    inter.add_argument("--time_col", help="its time column (default: none, the file order is the time)")
    inter.add_argument("--time_format", default="auto",
                       help="'numeric' (seconds), a strptime format such as %%Y-%%m-%%d (naive = UTC), or 'auto': a "
                            "number or an ISO 8601 date (default: auto)")
    items = parser.add_argument_group("items")
    items.add_argument("--items", help="CSV/TSV item table, with a header (optional)")
    items.add_argument("--item_id_col", help="its item id column (default: --item_col)")
    items.add_argument("--item_text_cols", help="comma-separated columns of the item table that form the item text")
    items.add_argument("--images", help="folder (searched recursively) or .zip of <item id>.<ext> images (optional)")
    output = parser.add_argument_group("output")
    output.add_argument("--name", required=True, help="dataset name (names the folder and the files)")
    output.add_argument("--out", default="dataset", help="output folder (default: dataset)")
    output.add_argument("--kcore", type=int, default=5,
                        help="min interactions per user and item; 0 or 1 for none (default: 5)")
    output.add_argument("--sep", help="cell separator of both tables (default: from the extension: .csv ',', "
                                      ".tsv/.tab tab); 'tab' or '\\t' for a tab")
    add_debug_flag(parser)
    return parser.parse_args(argv)


@command_line("convert_local", interrupted="Copied images are kept; run the same command again to resume.")
def main(argv: Sequence[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    return convert(args)


if __name__ == "__main__":
    main()
