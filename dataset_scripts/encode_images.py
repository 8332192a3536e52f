"""Encode item images into a CEMG feature file, ``<dataset>.image.npz`` (format: ``recbole_cemg/data/features.py``).

Images come from one folder, one file per item, named ``<item id>.<ext>`` (as written by download_images.py; the stem
is percent-decoded back into the item id). Features are those of the image tower (``encode_image``) of an open_clip
model: ``--model NAME`` (or ``local-dir:<folder>`` / ``hf-hub:<repo>``) with weights from ``--pretrained`` (a tag of
``open_clip.list_pretrained()`` or a local checkpoint file), preprocessed with the model's own validation transform.

Images that cannot be read are skipped and counted (the image modality is masked for those items). Encoding is
resumable like encode_text.py: after every ``--chunk_size`` items the rows done so far are saved to
``<output>.partial.npz``; a rerun with the same settings continues from there.

Example::

    python dataset_scripts/encode_images.py --image_dir images/Beauty --output dataset/Beauty/Beauty.image.npz \\
        --model ViT-B-32 --pretrained laion2b_s34b_b79k --fp16 --device cuda
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_text import (RESUME_HINT, EncodeError, OpenCLIPTextEncoder, load_partial,  # noqa: E402
                         save_item_features, write_features)

from recbole_cemg.errors import add_debug_flag, command_line  # noqa: E402

logger = logging.getLogger("encode_images")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def list_images(image_dir: str) -> tuple[list[str], list[str]]:
    """Item ids (percent-decoded file stems) and paths of the images in ``image_dir``, sorted by file name."""
    if not os.path.isdir(image_dir):
        raise EncodeError(f"Image folder not found: {image_dir}. Fill it with dataset_scripts/download_images.py.")
    tokens, paths = [], []
    seen: dict[str, str] = {}
    for name in sorted(os.listdir(image_dir)):
        stem, suffix = os.path.splitext(name)
        if name.startswith(".") or suffix.lower() not in IMAGE_SUFFIXES:
            continue  # temporary files of an unfinished download, reports, ...
        token = urllib.parse.unquote(stem)
        if token in seen:
            logger.warning(f"item '{token}' has several images; using {seen[token]}, ignoring {name}")
            continue
        seen[token] = name
        tokens.append(token)
        paths.append(os.path.join(image_dir, name))
    if not tokens:
        raise EncodeError(f"{image_dir} holds no image file ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return tokens, paths


class OpenCLIPImageEncoder:
    """The image tower of an open_clip model with its validation preprocessing."""

    def __init__(self, model_name: str, pretrained: str | None, device: str) -> None:
        from open_clip.transform import PreprocessCfg, image_transform_v2

        clip = OpenCLIPTextEncoder(model_name, pretrained, device)  # same checks, loading and naming as for text
        self.model, self.name, self.device = clip.model, clip.name, device
        self.preprocess = image_transform_v2(PreprocessCfg(**self.model.visual.preprocess_cfg), is_train=False)

    def load(self, path: str) -> torch.Tensor | None:
        """The preprocessed image, or ``None`` if it cannot be read."""
        try:
            with Image.open(path) as image:
                return self.preprocess(image.convert("RGB"))
        except Exception as error:  # PIL raises many kinds (OSError, SyntaxError, ...)
            logger.warning(f"skipping unreadable image {path}: {type(error).__name__}: {error}")
            return None

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels.to(self.device)).float()


def encode_resumable(tokens: list[str], paths: list[str], encoder: OpenCLIPImageEncoder, partial_path: str,
                     run_tag: str, batch_size: int = 64, chunk_size: int = 2048, normalize: bool = False,
                     workers: int = 4) -> tuple[list[str], np.ndarray, list[str]]:
    """Tokens and float32 features of the readable images (in input order), and the tokens of unreadable ones."""
    done = load_partial(partial_path, run_tag)
    todo = [i for i, token in enumerate(tokens) if token not in done]
    unreadable: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(tokens), initial=len(tokens) - len(todo), unit="img", desc="encoding") as bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            for b in range(0, len(chunk), batch_size):
                batch = chunk[b:b + batch_size]
                loaded = list(pool.map(encoder.load, (paths[i] for i in batch)))
                unreadable += [tokens[i] for i, x in zip(batch, loaded, strict=True) if x is None]
                good = [(i, x) for i, x in zip(batch, loaded, strict=True) if x is not None]
                bar.update(len(batch))
                if not good:
                    continue
                vectors = encoder.encode(torch.stack([x for _, x in good]))
                if normalize:
                    vectors = F.normalize(vectors, dim=-1)
                bad = ~torch.isfinite(vectors).all(dim=1)
                if bad.any():
                    i = good[int(bad.nonzero()[0])][0]
                    raise EncodeError(f"{encoder.name} produced NaN/inf for image {paths[i]}.")
                done.update(zip((tokens[i] for i, _ in good), vectors.cpu().numpy(), strict=True))
            if done:
                save_item_features(partial_path, list(done), np.stack(list(done.values())), run_tag)
    kept = [token for token in tokens if token in done]
    if not kept:
        raise EncodeError(f"none of the {len(tokens)} images could be read.")
    return kept, np.stack([done[token] for token in kept]), unreadable


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_dir", required=True, help="folder of <item id>.<ext> images")
    parser.add_argument("--output", help="feature file (default: <dataset>.image.npz in --data_path)")
    parser.add_argument("--dataset", help="dataset name, for the default output <data_path>/<dataset>.image.npz")
    parser.add_argument("--data_path", help="folder of the atomic files (default: dataset/<dataset>)")
    parser.add_argument("--model", required=True, help="open_clip model name, or local-dir:<folder> / hf-hub:<repo>")
    parser.add_argument("--pretrained", help="open_clip weights: a pretrained tag or a checkpoint file")
    parser.add_argument("--encoder_name", help="name recorded in the file (default: derived from the model)")
    parser.add_argument("--normalize", action="store_true", help="L2-normalise every vector")
    parser.add_argument("--fp16", action="store_true", help="store float16 instead of float32")
    parser.add_argument("--batch_size", type=int, default=64, help="images per forward pass (default: 64)")
    parser.add_argument("--chunk_size", type=int, default=2048,
                        help="images encoded between saves of the partial file (default: 2048)")
    parser.add_argument("--workers", type=int, default=4, help="threads decoding images (default: 4)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device (default: cuda if available, else cpu)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.output is None:
        if not args.dataset:
            parser.error("give --output, or --dataset (with optional --data_path) for the default output")
        args.output = os.path.join(args.data_path or os.path.join("dataset", args.dataset), f"{args.dataset}.image.npz")
    return args


def run(args: argparse.Namespace) -> dict:
    tokens, paths = list_images(args.image_dir)
    logger.info(f"{len(tokens)} images in {args.image_dir}")
    encoder = OpenCLIPImageEncoder(args.model, args.pretrained, args.device)
    name = args.encoder_name or encoder.name
    logger.info(f"encoder {name} on {args.device}")

    files = [(t, os.path.basename(p), os.path.getsize(p)) for t, p in zip(tokens, paths, strict=True)]
    settings = repr((args.model, args.pretrained, args.normalize, files))
    run_tag = f"partial {name} {hashlib.sha256(settings.encode()).hexdigest()[:16]}"
    partial_path = f"{args.output}.partial.npz"
    kept, features, unreadable = encode_resumable(tokens, paths, encoder, partial_path, run_tag, args.batch_size,
                                                  args.chunk_size, args.normalize, args.workers)
    features = write_features(args.output, kept, features, name, partial_path, args.fp16)
    logger.info(f"wrote {args.output}: features {features.shape} {features.dtype}; "
                f"{len(unreadable)} unreadable image(s) skipped")
    return {"encoded": len(kept), "unreadable": unreadable}


@command_line("encode_images", interrupted=RESUME_HINT)
def main(argv: Sequence[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
