"""Fetch the item images listed in ``<name>.images.tsv`` (written by convert_amazon.py) into one folder.

Each item's image is saved as ``<out_dir>/<item id><ext>`` (the extension follows the decoded format: ``.jpg``,
``.png``, ...; item ids are percent-encoded where they hold characters unsafe in file names). Sources may be
``http(s)://`` URLs, ``file://`` URLs or plain local paths.

* concurrent (``--workers`` threads);
* resumable: an item whose file already exists and decodes is skipped; every file is written to a temporary name and
  renamed, so an interrupted run never leaves half a file;
* retried with exponential back-off (``--retries``, ``--backoff`` seconds, doubled per try) on network errors, timeouts,
  HTTP 408/429 and 5xx; other HTTP errors (404, 403, ...) are final;
* verified: the image must decode with PIL, otherwise it counts as broken and is not kept.

Items with no URL, a missing/unreachable image or a broken one are listed in ``<out_dir>/download_report.tsv``
(item_id, status, url, detail) and counted in ``download_report.json``; they simply lack the image modality later.

Example::

    python dataset_scripts/download_images.py --images_tsv dataset/Beauty/Beauty.images.tsv --out_dir images/Beauty
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple

from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing the plugin
from recbole_cemg.errors import UserError, add_debug_flag, command_line  # noqa: E402
from recbole_cemg.io import atomic_write  # noqa: E402

logger = logging.getLogger("download_images")

USER_AGENT = "Mozilla/5.0 (compatible; recbole-cemg image downloader)"
RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
IMAGE_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
STATUSES = ("downloaded", "skipped", "no_url", "missing", "broken")


class DownloadError(UserError):
    """A problem the user can fix; ``main`` reports it without a traceback."""


class Missing(Exception):
    """The image is not there (404, unreachable after the retries, no such file)."""


class Retryable(Exception):
    """A transient failure worth another try."""


class Result(NamedTuple):
    """What happened to one item's image."""

    item_id: str
    status: str
    url: str = ""
    detail: str = ""


def file_stem(item_id: str) -> str:
    """The file name (without extension) of an item; ``encode_images.py`` reverses it with ``unquote``."""
    return urllib.parse.quote(item_id, safe="")


def existing_image(out_dir: str, item_id: str) -> str | None:
    """The item's image file from an earlier run, if it is there and decodes."""
    stem = file_stem(item_id)
    for ext in dict.fromkeys(IMAGE_EXTENSIONS.values()):
        path = os.path.join(out_dir, stem + ext)
        if os.path.isfile(path):
            try:
                with open(path, "rb") as f:
                    decode(f.read())
                return path
            except ValueError:
                logger.info(f"{path} does not decode; fetching it again")
    return None


def decode(data: bytes) -> str:
    """The image format of ``data``; ``ValueError`` if PIL cannot fully decode it."""
    if not data:
        raise ValueError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:  # verify() misses truncated pixel data; load() does not
            image.load()
            return image.format or ""
    except Exception as error:  # PIL raises many kinds (OSError, SyntaxError, struct.error, ...)
        raise ValueError(f"not a decodable image ({type(error).__name__}: {error})") from error


def fetch(url: str, timeout: float) -> bytes:
    """The bytes at ``url``: http(s), file:// or a local path."""
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            if error.code in RETRYABLE_HTTP:
                raise Retryable(f"HTTP {error.code}") from error
            raise Missing(f"HTTP {error.code}") from error
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise Retryable(f"{type(error).__name__}: {reason}") from error
    path = urllib.request.url2pathname(urllib.parse.urlparse(url).path) if scheme == "file" else url
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as error:
        raise Missing(f"no such file: {path}") from error
    except OSError as error:
        raise Missing(f"cannot read {path}: {error}") from error


def fetch_with_retries(url: str, retries: int, backoff: float, timeout: float) -> bytes:
    """``fetch`` with ``retries`` more tries after a transient failure, waiting ``backoff * 2**n`` seconds."""
    for attempt in range(retries + 1):
        try:
            return fetch(url, timeout)
        except Retryable as error:
            if attempt == retries:
                raise Missing(f"unreachable after {retries + 1} tries ({error})") from error
            time.sleep(backoff * 2 ** attempt)
    raise AssertionError("unreachable")


def download_one(item_id: str, url: str, out_dir: str, retries: int, backoff: float, timeout: float) -> Result:
    """Fetch, verify and atomically store one item's image."""
    if not url:
        return Result(item_id, "no_url")
    if existing_image(out_dir, item_id):
        return Result(item_id, "skipped", url)
    try:
        data = fetch_with_retries(url, retries, backoff, timeout)
    except Missing as error:
        return Result(item_id, "missing", url, str(error))
    try:
        fmt = decode(data)
    except ValueError as error:
        return Result(item_id, "broken", url, str(error))
    path = os.path.join(out_dir, file_stem(item_id) + IMAGE_EXTENSIONS.get(fmt, f".{fmt.lower() or 'img'}"))
    with atomic_write(path) as f:
        f.write(data)
    return Result(item_id, "downloaded", url)


def read_image_list(path: str) -> list[tuple[str, str]]:
    """(item id, url) rows of an ``item_id<TAB>url`` file with a header line."""
    if not os.path.isfile(path):
        raise DownloadError(f"Image list not found: {path}. Make it with dataset_scripts/convert_amazon.py.")
    with open(path, encoding="utf-8", newline="") as f:
        rows = [row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if row]
    if not rows or rows[0][0].partition(":")[0] != "item_id":
        raise DownloadError(f"{path}: expected a header 'item_id<TAB>url'.")
    items = {}
    for row in rows[1:]:
        item_id, url = row[0].strip(), (row[1].strip() if len(row) > 1 else "")
        if item_id and item_id not in items:
            items[item_id] = url
    return list(items.items())


def download_all(images_tsv: str, out_dir: str, workers: int = 16, retries: int = 3, backoff: float = 1.0,
                 timeout: float = 20.0) -> dict:
    """Download every listed image and write the report; returns the report's summary."""
    items = read_image_list(images_tsv)
    os.makedirs(out_dir, exist_ok=True)
    logger.info(f"{len(items)} items from {images_tsv} into {out_dir} ({workers} workers)")
    results: list[Result] = []
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(items), unit="img", desc="images") as bar:
        futures = [pool.submit(download_one, item, url, out_dir, retries, backoff, timeout) for item, url in items]
        try:
            for future in as_completed(futures):
                result = future.result()
                with lock:
                    results.append(result)
                bar.update(1)
                counts = Counter(r.status for r in results)
                bar.set_postfix(ok=counts["downloaded"] + counts["skipped"], missing=counts["missing"],
                                broken=counts["broken"], refresh=False)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            raise
    order = {item: i for i, (item, _) in enumerate(items)}
    results.sort(key=lambda r: order[r.item_id])
    counts = Counter(r.status for r in results)
    summary = {"images_tsv": images_tsv, "out_dir": out_dir, "items": len(items),
               **{status: counts[status] for status in STATUSES}}
    failed = [r for r in results if r.status in ("no_url", "missing", "broken")]
    with atomic_write(os.path.join(out_dir, "download_report.tsv"), "w", encoding="utf-8") as f:
        f.write("item_id\tstatus\turl\tdetail\n")
        for r in failed:
            f.write("\t".join(" ".join(str(x).split()) for x in (r.item_id, r.status, r.url, r.detail)) + "\n")
    summary["failed"] = {status: [r.item_id for r in failed if r.status == status]
                         for status in ("no_url", "missing", "broken")}
    with atomic_write(os.path.join(out_dir, "download_report.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    logger.info(f"{counts['downloaded']} downloaded, {counts['skipped']} already there, {counts['no_url']} without "
                f"URL, {counts['missing']} missing, {counts['broken']} broken; report in "
                f"{os.path.join(out_dir, 'download_report.tsv')}")
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images_tsv", required=True, help="item_id<TAB>url file (from convert_amazon.py)")
    parser.add_argument("--out_dir", required=True, help="folder for the images and the report")
    parser.add_argument("--workers", type=int, default=16, help="concurrent downloads (default: 16)")
    parser.add_argument("--retries", type=int, default=3, help="extra tries after a transient failure (default: 3)")
    parser.add_argument("--backoff", type=float, default=1.0,
                        help="seconds before the first retry, doubled for each next one (default: 1)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per HTTP request (default: 20)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


@command_line("download_images", interrupted="Finished images are kept; run the same command again to resume.")
def main(argv: Sequence[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    return download_all(args.images_tsv, args.out_dir, args.workers, args.retries, args.backoff, args.timeout)


if __name__ == "__main__":
    main()
