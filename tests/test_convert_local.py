"""dataset_scripts/convert_local.py on a tiny hand-made catalogue (CSV + image folder or zip), and on the H&M sample."""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT, load_script

# t_dat, customer_id, article_id, price, in file order. Four rows are malformed: empty time (line 7), a month 13
# (line 15), no customer (line 16), too few cells (line 17). The duplicate (u1, 0101, 2020-01-01) is removed.
# With k = 2: round 1 drops u4 (1 interaction), 0104 (1) and 0105 (1), which leaves u3 with {0101, 0103};
# round 2 changes nothing. Left: u1 {0101, 0102, 0103, 0106}, u2 {0101, 0102, 0106}, u3 {0101, 0103}.
TRANSACTIONS = """t_dat,customer_id,article_id,price
2020-01-03,u1,0102,1.5
2020-01-01,u1,0101,1.0
2020-01-02,u1,0103,2.0
2020-01-04,u2,0102,1.5
2020-01-02,u2,0101,1.0
,u9,0101,1.0
2020-01-05,u3,0101,1.0
2020-01-06,u3,0103,2.0
2020-01-07,u3,0104,3.0
2020-01-01,u4,0105,1.0
2020-01-01,u1,0101,1.0
2020-01-08,u1,0106,4.0
2020-01-08,u2,0106,4.0
2020-13-01,u2,0103,1.0
2020-01-09,,0101,1.0
2020-01-09,u2
"""
DAY = 86400
JAN1 = 1577836800  # 2020-01-01 00:00 UTC
KEPT = [("u1", "0101", 1), ("u1", "0103", 2), ("u2", "0101", 2), ("u1", "0102", 3), ("u2", "0102", 4),
        ("u3", "0101", 5), ("u3", "0103", 6), ("u1", "0106", 8), ("u2", "0106", 8)]  # (user, item, day of Jan 2020)
# 0106 has no metadata; the second 0101 row is ignored; the row without an id is malformed (line 7).
ARTICLES = """article_id,prod_name,colour group,detail_desc,price
0101,Slim jeans,Dark Blue,"Jeans in washed denim, with a ""slim"" fit.",10
0102,Tee,White,Soft	cotton tee,5
0103,Sock,Black,,1
0104,Hat,Red,Warm hat.,3
0101,Duplicate row,Grey,ignored,1
,Nameless,Green,no id,1
"""
# 0101 valid, 0102 corrupt, 0103 no image, 0104 valid but dropped by the k-core, 0106 valid (PNG, in a subfolder).


def image_bytes(color: str, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 24), color).save(buffer, format=fmt)
    return buffer.getvalue()


IMAGES = {"0101.jpg": image_bytes("blue", "JPEG"), "0102.jpg": image_bytes("white", "JPEG")[:150],
          "0104.jpg": image_bytes("red", "JPEG"), "010/0106.png": image_bytes("green", "PNG"),
          "notes.txt": b"not an image"}


@pytest.fixture(scope="module")
def convert_local():
    return load_script("convert_local")


def write_catalogue(folder: Path, images_as: str) -> list[str]:
    """The raw files; returns the converter's arguments (without --out)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "transactions.csv").write_text(TRANSACTIONS, encoding="utf-8")
    (folder / "articles.csv").write_text(ARTICLES, encoding="utf-8")
    if images_as == "zip":
        images = folder / "images.zip"
        with zipfile.ZipFile(images, "w") as archive:
            for name, data in IMAGES.items():
                archive.writestr(f"images/{name}", data)
    else:
        images = folder / "images"
        for name, data in IMAGES.items():
            (images / name).parent.mkdir(parents=True, exist_ok=True)
            (images / name).write_bytes(data)
    return ["--name", "shop", "--interactions", str(folder / "transactions.csv"), "--user_col", "customer_id",
            "--item_col", "article_id", "--time_col", "t_dat", "--time_format", "%Y-%m-%d",
            "--items", str(folder / "articles.csv"), "--item_text_cols", "prod_name,colour group,detail_desc",
            "--images", str(images), "--kcore", "2"]


def read_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").split("\n") if line]


@pytest.mark.parametrize("images_as", ["folder", "zip"])
def test_convert_and_resume(convert_local, tmp_path, images_as):
    args = write_catalogue(tmp_path / "raw", images_as)
    out = tmp_path / "out"
    summary = convert_local.main([*args, "--out", str(out)])

    folder = out / "shop"
    inter = read_rows(folder / "shop.inter")
    assert inter[0] == ["user_id:token", "item_id:token", "timestamp:float"]
    assert inter[1:] == [[u, i, str(JAN1 + (day - 1) * DAY)] for u, i, day in KEPT]  # time order, ties in file order

    items = read_rows(folder / "shop.item")
    assert items[0] == ["item_id:token", "prod_name:token_seq", "colour_group:token_seq", "detail_desc:token_seq"]
    assert items[1:] == [["0101", "Slim jeans", "Dark Blue", "Jeans in washed denim, with a ''slim'' fit."],
                         ["0103", "Sock", "Black", ""], ["0102", "Tee", "White", "Soft cotton tee"],
                         ["0106", "", "", ""]]  # leading zeros kept; order of first interaction

    assert sorted(p.name for p in (folder / "images").iterdir()) == ["0101.jpg", "0106.png"]
    assert (folder / "images" / "0101.jpg").read_bytes() == IMAGES["0101.jpg"]
    assert read_rows(folder / "shop.item_report.tsv")[0] == ["item_id", "image", "metadata", "detail"]
    report = {row[0]: row[1:3] for row in read_rows(folder / "shop.item_report.tsv")[1:]}
    assert report == {"0103": ["missing", "yes"], "0102": ["broken", "yes"], "0106": ["ok", "no"]}

    assert json.loads((folder / "shop.summary.json").read_text()) == summary
    assert summary["parsed"] == {"interactions": 12, "users": 4, "items": 6}
    assert summary["deduplicated"] == {"interactions": 11, "users": 4, "items": 6}
    assert summary["after_kcore"] == {"interactions": 9, "users": 3, "items": 4} and summary["kcore_rounds"] == 2
    malformed = summary["malformed"]["interactions"]
    assert malformed["count"] == 4 and [m["line"] for m in malformed["first_lines"]] == [7, 15, 16, 17]
    assert "unparsable 't_dat'" in malformed["first_lines"][1]["reason"]
    assert "missing 'customer_id'" in malformed["first_lines"][2]["reason"]
    assert "2 cells, the header has 4" in malformed["first_lines"][3]["reason"]
    assert summary["malformed"]["items"]["count"] == 1 and summary["malformed"]["items"]["first_lines"][0]["line"] == 7
    assert summary["item_rows_repeated"] == 1
    assert (summary["items_with_meta"], summary["items_without_meta"]) == (3, 1)
    assert (summary["items_with_image"], summary["items_without_image"]) == (2, 2)
    assert summary["image_copy"]["kind"] == images_as and summary["image_copy"]["files_in_source"] == 4
    assert {k: summary["image_copy"][k] for k in ("copied", "skipped", "missing", "broken")} == \
        {"copied": 2, "skipped": 0, "missing": 1, "broken": 1}
    assert summary["image_copy"]["broken_items"] == ["0102"]
    assert "modalities: [text, image]" in (out / "shop.yaml").read_text()
    assert not [p for p in folder.rglob(".*")]  # no temporary files left

    # Rerun: valid images are not copied again; an image of an item that is not kept is removed.
    before = (folder / "images" / "0101.jpg").stat().st_mtime_ns
    (folder / "images" / "0999.jpg").write_bytes(IMAGES["0101.jpg"])
    again = convert_local.main([*args, "--out", str(out)])
    assert {k: again["image_copy"][k] for k in ("copied", "skipped", "missing", "broken", "removed_from_output")} == \
        {"copied": 0, "skipped": 2, "missing": 1, "broken": 1, "removed_from_output": 1}
    assert (folder / "images" / "0101.jpg").stat().st_mtime_ns == before
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["0101.jpg", "0106.png"]
    assert read_rows(folder / "shop.inter") == inter


def test_kcore_off_and_too_strict(convert_local, tmp_path, stops_with):
    args = write_catalogue(tmp_path / "raw", "folder")
    summary = convert_local.main([*args, "--out", str(tmp_path / "out"), "--kcore", "0"])
    assert summary["after_kcore"] == {"interactions": 11, "users": 4, "items": 6} and summary["kcore_rounds"] == 0
    assert summary["image_copy"]["copied"] == 3  # 0104 is kept now
    with stops_with("No interaction is left after 5-core"):
        convert_local.main([*args, "--out", str(tmp_path / "out"), "--kcore", "5"])


def test_recbole_loads_the_converted_dataset(convert_local, tmp_path, monkeypatch):
    args = write_catalogue(tmp_path / "raw", "zip")
    out = tmp_path / "out"
    convert_local.main([*args, "--out", str(out)])

    monkeypatch.setattr(sys, "argv", ["pytest"])  # RecBole's Config reads --key=value from the command line
    from recbole.data import create_dataset

    from recbole_cemg.config import Config

    config = Config("SASRec", "shop", config_file_list=[str(out / "shop.yaml")],
                    config_dict={"data_path": str(out), "state": "WARNING", "show_progress": False, "use_gpu": False,
                                 "load_col": {"inter": ["user_id", "item_id", "timestamp"],
                                              "item": ["item_id", "prod_name", "colour_group", "detail_desc"]}})
    dataset = create_dataset(config)
    assert dataset.inter_num == len(KEPT)
    assert dataset.user_num == 3 + 1 and dataset.item_num == 4 + 1  # + padding
    assert set(dataset.field2token_id["item_id"]) == {"[PAD]", "0101", "0102", "0103", "0106"}
    name = dataset.item_feat["prod_name"][dataset.token2id("item_id", "0101")]
    assert [dataset.id2token("prod_name", int(t)) for t in name if t] == ["Slim", "jeans"]


def test_item_table_and_images_are_optional(convert_local, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "clicks.tsv").write_text("session\titem\n" + "".join(f"s{u}\t{i:03d}\n" for u in range(3)
                                                             for i in range(3)))
    summary = convert_local.main(["--name", "clicks", "--interactions", str(raw / "clicks.tsv"), "--user_col",
                                  "session", "--item_col", "item", "--out", str(tmp_path / "out"), "--kcore", "1"])
    assert summary["after_kcore"] == {"interactions": 9, "users": 3, "items": 3}
    inter = read_rows(tmp_path / "out" / "clicks" / "clicks.inter")
    assert [row[2] for row in inter[1:]] == [str(n) for n in range(9)]  # without a time column: the file order
    assert read_rows(tmp_path / "out" / "clicks" / "clicks.item") == [["item_id:token"], ["000"], ["001"], ["002"]]
    assert summary["items_without_meta"] is None and summary["items_without_image"] is None
    assert "modalities: []" in (tmp_path / "out" / "clicks.yaml").read_text()


def test_errors_name_the_file_and_the_fix(convert_local, tmp_path, stops_with):
    args = write_catalogue(tmp_path / "raw", "folder")
    out = ["--out", str(tmp_path / "out")]
    with stops_with(r"no column 'customer' \(--user_col\).*t_dat"):
        convert_local.main([*args, *out, "--user_col", "customer"])
    with stops_with(r"articles.csv: no column 'colour' \(--item_text_cols\)"):
        convert_local.main([*args, *out, "--item_text_cols", "prod_name,colour"])
    (tmp_path / "raw" / "transactions.dat").write_text(TRANSACTIONS)
    with stops_with("Pass --sep"):
        convert_local.main([*args, *out, "--interactions", str(tmp_path / "raw" / "transactions.dat")])
    with stops_with("neither a folder nor a zip"):
        convert_local.main([*args, *out, "--images", str(tmp_path / "raw" / "articles.csv")])


def test_time_formats_and_shared_suffixes(convert_local):
    assert convert_local.parse_time("2020-01-02", "%Y-%m-%d") == JAN1 + DAY  # naive dates are UTC
    assert convert_local.parse_time("2020-01-01T01:00:00+01:00", "auto") == JAN1
    assert convert_local.parse_time("1.5e3", "auto") == 1500.0
    for value, fmt in [("2020-01-01", "numeric"), ("nan", "numeric"), ("01/02/2020", "auto"), ("", "auto")]:
        with pytest.raises(ValueError):
            convert_local.parse_time(value, fmt)
    assert convert_local.IMAGE_SUFFIXES == load_script("encode_images").IMAGE_SUFFIXES


HM = Path(os.environ.get("CEMG_HM_SAMPLE", Path(ROOT).parent / "shared" / "data" / "hm_sample"))


@pytest.mark.skipif(not (HM / "transactions_train_sample.csv").is_file(),
                    reason="H&M sample absent (set CEMG_HM_SAMPLE to its folder)")
@pytest.mark.parametrize("k, after, with_meta", [(5, (121, 19, 17), 14), (3, (9558, 735, 2222), 884)])
def test_hm_sample(convert_local, tmp_path, k, after, with_meta):
    summary = convert_local.main([
        "--name", "hm", "--out", str(tmp_path), "--kcore", str(k),
        "--interactions", str(HM / "transactions_train_sample.csv"), "--user_col", "customer_id",
        "--item_col", "article_id", "--time_col", "t_dat", "--time_format", "%Y-%m-%d",
        "--items", str(HM / "articles_sample.csv"),
        "--item_text_cols", "prod_name,product_type_name,colour_group_name,detail_desc",
        "--images", str(HM / "images_64x96.zip")])
    assert summary["parsed"] == {"interactions": 31662, "users": 1364, "items": 17033}
    assert summary["deduplicated"]["interactions"] == 28516  # same customer, article and day: one purchase
    assert summary["malformed"]["interactions"]["count"] == 0
    assert tuple(summary["after_kcore"].values()) == after
    assert summary["items_with_meta"] == with_meta
    assert summary["items_with_image"] == after[2] and summary["image_copy"]["broken"] == 0
    inter = read_rows(tmp_path / "hm" / "hm.inter")[1:]
    times = [int(row[2]) for row in inter]
    assert times == sorted(times) and all(t % DAY == 0 for t in times)
    assert 1537401600 <= times[0] and times[-1] <= 1600732800  # 2018-09-20 to 2020-09-22, UTC days
    assert all(len(row[1]) == 10 and row[1].startswith("0") for row in inter)  # article ids keep their zero
