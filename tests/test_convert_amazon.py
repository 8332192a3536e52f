"""dataset_scripts/convert_amazon.py on tiny hand-made raw files of the 2014, 2018 and 2023 Amazon releases."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script


# (user, item, time in seconds). With k = 2 the cascade takes 4 rounds:
# round 1 drops u4 (1 interaction), u7 (1), D (1) and E (1); round 2 then drops u5 (only B left) and F (only u6);
# round 3 drops u6 (only C left); round 4 changes nothing. Left: u1 {A, B, C}, u2 {A, B}, u3 {A, C}.
INTERACTIONS = [
    ("u1", "A", 100), ("u1", "B", 300), ("u1", "C", 200), ("u2", "B", 150), ("u2", "A", 50), ("u3", "A", 400),
    ("u3", "C", 250), ("u4", "D", 10), ("u5", "E", 20), ("u5", "B", 30), ("u6", "F", 40), ("u6", "C", 60),
    ("u7", "F", 70),
    ("u1", "A", 100),  # duplicate (user, item, time): removed
]
KEPT = [("u2", "A", 50), ("u1", "A", 100), ("u2", "B", 150), ("u1", "C", 200), ("u3", "C", 250), ("u1", "B", 300),
        ("u3", "A", 400)]  # sorted by time
RATINGS = {"A": 5.0, "B": 4.0, "C": 3.0, "D": 1.0, "E": 2.0, "F": 4.5}
META = {  # C has no metadata
    "A": {"title": 'Lip "Gloss"\tRed &amp; <b>Bold</b>\nNew', "brand": "Acme Co", "cat": ["Beauty", "Skin Care"],
          "description": "Soft.\tShiny\r\nlips", "image": "http://img.example/A.jpg"},
    "B": {"title": "Brush", "brand": None, "cat": ["Beauty", "Tools & Accessories"], "description": "",
          "image": ""},
    "D": {"title": "Dropped", "brand": "X", "cat": ["Y"], "description": "gone", "image": "http://img.example/D.jpg"},
}


def review(fmt: str, user: str, item: str, time: int) -> dict:
    if fmt == "2023":
        return {"user_id": user, "parent_asin": item, "timestamp": time * 1000, "rating": RATINGS[item],
                "text": "great"}
    return {"reviewerID": user, "asin": item, "unixReviewTime": time, "overall": RATINGS[item], "reviewText": "ok"}


def meta_record(fmt: str, item: str, m: dict) -> dict:
    if fmt == "2014":
        return {"asin": item, "title": m["title"], "brand": m["brand"], "categories": [m["cat"], ["Beauty", "Extra"]],
                "description": m["description"], "imUrl": m["image"]}
    if fmt == "2018":
        return {"asin": item, "title": m["title"], "brand": m["brand"], "category": m["cat"] + ["Extra"],
                "description": [m["description"]], "image": [m["image"]] if m["image"] else []}
    images = [{"thumb": "t.jpg", "large": m["image"], "hi_res": None, "variant": "MAIN"}] if m["image"] else []
    return {"parent_asin": item, "title": m["title"], "store": m["brand"], "categories": m["cat"] + ["Extra"],
            "description": [m["description"]], "images": images}


def write_gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def write_raw(folder: Path, fmt: str) -> Path:
    """Raw files as the release names them, each with one malformed line; returns the review file."""
    reviews = {"2014": "reviews_Beauty_5.json.gz", "2018": "Beauty_5.json.gz", "2023": "Beauty.jsonl.gz"}[fmt]
    meta = "meta_Beauty.jsonl.gz" if fmt == "2023" else "meta_Beauty.json.gz"
    lines = [json.dumps(review(fmt, *row)) for row in INTERACTIONS]
    lines.insert(3, '{"reviewerID": "u9", "asin": ')  # truncated line
    lines.insert(5, "")  # blank lines are not malformed
    write_gz(folder / reviews, lines)
    dump = repr if fmt == "2014" else json.dumps  # 2014 metadata is Python literals
    meta_lines = [dump(meta_record(fmt, item, m)) for item, m in META.items()] + ["{'asin': 'Z', 'title': "]
    write_gz(folder / meta, meta_lines)
    return folder / reviews


@pytest.fixture(scope="module")
def convert_amazon():
    return load_script("convert_amazon")


def read_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").split("\n") if line]


@pytest.mark.parametrize("fmt", ["2014", "2018", "2023"])
def test_convert_each_release(convert_amazon, tmp_path, fmt):
    reviews = write_raw(tmp_path, fmt)
    out = tmp_path / "out"
    summary = convert_amazon.main(["--reviews", str(reviews), "--out", str(out), "--kcore", "2"])

    assert summary["format"] == fmt and summary["name"] == "Beauty"
    folder = out / "Beauty"
    inter = read_rows(folder / "Beauty.inter")
    assert inter[0] == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert [(u, i, float(t)) for u, i, _, t in inter[1:]] == [(u, i, float(t)) for u, i, t in KEPT]
    assert [float(r) for *_, r, _ in inter[1:]] == [RATINGS[i] for _, i, _ in KEPT]

    items = read_rows(folder / "Beauty.item")
    assert items[0] == ["item_id:token", "title:token_seq", "brand:token", "categories:token_seq",
                        "description:token_seq"]
    by_id = {row[0]: row for row in items[1:]}
    assert list(by_id) == ["A", "B", "C"]  # in order of first interaction
    assert by_id["A"] == ["A", "Lip ''Gloss'' Red & Bold New", "Acme Co", "Beauty Skin_Care Extra",
                          "Soft. Shiny lips"]
    assert by_id["B"] == ["B", "Brush", "", "Beauty Tools_&_Accessories Extra", ""]
    assert by_id["C"] == ["C", "", "", "", ""]
    assert read_rows(folder / "Beauty.images.tsv") == [["item_id", "url"], ["A", "http://img.example/A.jpg"],
                                                      ["B", ""], ["C", ""]]

    stored = json.loads((folder / "Beauty.summary.json").read_text())
    assert stored == summary
    assert summary["parsed"] == {"interactions": 14, "users": 7, "items": 6}
    assert summary["deduplicated"] == {"interactions": 13, "users": 7, "items": 6}
    assert summary["after_kcore"] == {"interactions": 7, "users": 3, "items": 3}
    assert summary["kcore_rounds"] == 4
    assert summary["malformed"]["reviews"]["count"] == 1
    assert summary["malformed"]["reviews"]["first_lines"][0]["line"] == 4
    assert summary["malformed"]["meta"]["count"] == 1
    assert summary["items_without_meta"] == 1 and summary["items_with_image_url"] == 1
    assert (out / "Beauty.yaml").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_recbole_loads_the_converted_dataset(convert_amazon, tmp_path, monkeypatch):
    reviews = write_raw(tmp_path, "2014")
    out = tmp_path / "out"
    convert_amazon.main(["--reviews", str(reviews), "--out", str(out), "--name", "beauty14", "--kcore", "2"])

    monkeypatch.setattr(sys, "argv", ["pytest"])  # RecBole's Config reads --key=value from the command line
    from recbole.data import create_dataset

    from recbole_cemg.config import Config

    config = Config("SASRec", "beauty14", config_file_list=[str(out / "beauty14.yaml")],
                    config_dict={"data_path": str(out), "state": "WARNING", "show_progress": False,
                                 "use_gpu": False})
    dataset = create_dataset(config)
    assert dataset.inter_num == len(KEPT)
    assert dataset.user_num == 3 + 1 and dataset.item_num == 3 + 1  # + padding
    title = dataset.item_feat["title"][dataset.token2id("item_id", "A")]
    words = [dataset.id2token("title", int(t)) for t in title if t]
    assert words == ["Lip", "''Gloss''", "Red", "&", "Bold", "New"]
    categories = dataset.item_feat["categories"][dataset.token2id("item_id", "B")]
    assert [dataset.id2token("categories", int(t)) for t in categories if t] == [
        "Beauty", "Tools_&_Accessories", "Extra"]
    assert "rating" in dataset.inter_feat and "timestamp" in dataset.inter_feat


def test_format_detection_and_errors(convert_amazon, tmp_path, stops_with):
    assert convert_amazon.detect_format("x/reviews_Toys_and_Games_5.json.gz") == "2014"
    assert convert_amazon.detect_format("All_Beauty.json.gz") == "2018"
    assert convert_amazon.detect_format("All_Beauty.jsonl.gz") == "2023"
    assert convert_amazon.default_meta("raw/reviews_Toys_5.json.gz", "2014") == "raw/meta_Toys.json.gz"
    assert convert_amazon.default_meta("raw/Toys_5.json.gz", "2018") == "raw/meta_Toys.json.gz"
    assert convert_amazon.default_meta("raw/Toys.jsonl.gz", "2023") == "raw/meta_Toys.jsonl.gz"
    with stops_with("Cannot tell the Amazon release"):
        convert_amazon.main(["--reviews", str(tmp_path / "reviews.csv"), "--out", str(tmp_path)])
    reviews = write_raw(tmp_path, "2018")
    with stops_with("No interaction is left after 9-core"):
        convert_amazon.main(["--reviews", str(reviews), "--out", str(tmp_path / "o"), "--kcore", "9"])
