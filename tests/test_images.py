"""dataset_scripts/download_images.py (local files and a local HTTP server) and encode_images.py (tiny open_clip)."""

from __future__ import annotations

import functools
import http.server
import io
import json
import socket
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import load_script


@pytest.fixture(scope="module")
def download_images():
    return load_script("download_images")


@pytest.fixture(scope="module")
def encode_images():
    return load_script("encode_images")


def image_bytes(color, fmt: str, size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; ``/flaky.jpg`` answers 503 the first time; every request path is recorded."""

    requests: list[str] = []

    def do_GET(self):
        Handler.requests.append(self.path)
        if self.path == "/flaky.jpg" and Handler.requests.count(self.path) == 1:
            self.send_error(503)
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "good.png").write_bytes(image_bytes("red", "PNG"))
    (root / "flaky.jpg").write_bytes(image_bytes("blue", "JPEG"))
    (root / "corrupt.jpg").write_bytes(image_bytes("green", "JPEG")[:200])  # truncated
    Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_report_and_resume(download_images, server, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / "shoe.jpg").write_bytes(image_bytes("white", "JPEG"))
    (local / "hat.png").write_bytes(image_bytes("black", "PNG"))
    rows = {
        "h1": f"{server}/good.png", "h2": f"{server}/corrupt.jpg", "h3": f"{server}/missing.jpg",
        "h4": f"{server}/flaky.jpg", "h5": f"http://127.0.0.1:{closed_port()}/x.jpg",
        "l1": str(local / "shoe.jpg"), "l2": (local / "hat.png").as_uri(), "l3": str(local / "nope.jpg"),
        "a/b": str(local / "shoe.jpg"), "n1": "",
    }
    tsv = tmp_path / "toy.images.tsv"
    tsv.write_text("item_id\turl\n" + "".join(f"{item}\t{url}\n" for item, url in rows.items()))
    out = tmp_path / "images"
    args = ["--images_tsv", str(tsv), "--out_dir", str(out), "--workers", "4", "--retries", "1", "--backoff", "0",
            "--timeout", "5"]

    summary = download_images.main(args)
    assert (summary["downloaded"], summary["skipped"], summary["no_url"], summary["missing"], summary["broken"]) == \
        (5, 0, 1, 3, 1)
    assert summary["failed"] == {"no_url": ["n1"], "missing": ["h3", "h5", "l3"], "broken": ["h2"]}
    assert sorted(p.name for p in out.iterdir()) == [
        "a%2Fb.jpg", "download_report.json", "download_report.tsv", "h1.png", "h4.jpg", "l1.jpg", "l2.png"]
    assert (out / "h1.png").read_bytes() == (tmp_path / "www" / "good.png").read_bytes()
    assert Handler.requests.count("/flaky.jpg") == 2  # 503, then retried
    report = [line.split("\t") for line in (out / "download_report.tsv").read_text().splitlines()]
    assert report[0] == ["item_id", "status", "url", "detail"]
    by_item = {row[0]: row for row in report[1:]}
    assert by_item["h3"][1:3] == ["missing", rows["h3"]] and "HTTP 404" in by_item["h3"][3]
    assert by_item["h5"][1] == "missing" and "unreachable after 2 tries" in by_item["h5"][3]
    assert by_item["h2"][1] == "broken" and "not a decodable image" in by_item["h2"][3]
    assert by_item["l3"][1] == "missing" and by_item["n1"][1] == "no_url"
    assert json.loads((out / "download_report.json").read_text()) == summary

    good_requests = len([r for r in Handler.requests if r in ("/good.png", "/flaky.jpg")])
    (out / "l1.jpg").write_bytes(b"half a file")  # a damaged earlier download is fetched again
    again = download_images.main(args)
    assert (again["downloaded"], again["skipped"], again["missing"], again["broken"]) == (1, 4, 3, 1)
    assert len([r for r in Handler.requests if r in ("/good.png", "/flaky.jpg")]) == good_requests
    Image.open(out / "l1.jpg").load()


def test_download_needs_an_image_list(download_images, tmp_path, stops_with):
    with stops_with("Image list not found"):
        download_images.main(["--images_tsv", str(tmp_path / "x.tsv"), "--out_dir", str(tmp_path / "o")])


def test_encode_images(encode_images, tiny_clip, tmp_path):
    from recbole_cemg.data.features import load_item_features

    model, checkpoint = tiny_clip
    images = tmp_path / "images"
    images.mkdir()
    (images / "i1.jpg").write_bytes(image_bytes("red", "JPEG"))
    (images / "i2.png").write_bytes(image_bytes("blue", "PNG", (20, 50)))
    (images / "a%2Fb.jpg").write_bytes(image_bytes("yellow", "JPEG"))
    (images / "bad.jpg").write_bytes(b"not an image")
    (images / ".i3.jpg.tmp").write_bytes(b"unfinished download")
    (images / "download_report.tsv").write_text("item_id\tstatus\turl\tdetail\n")
    args = ["--image_dir", str(images), "--model", "tiny-clip", "--pretrained", str(checkpoint), "--device", "cpu",
            "--batch_size", "2", "--chunk_size", "2", "--workers", "2"]

    first = encode_images.main([*args, "--output", str(tmp_path / "toy.image.npz")])
    assert first == {"encoded": 3, "unreadable": ["bad"]}
    stored = load_item_features(str(tmp_path / "toy.image.npz"))
    assert stored.item_tokens.tolist() == ["a/b", "i1", "i2"]
    assert stored.features.shape == (3, 16) and stored.features.dtype == np.float32
    assert stored.encoder == "open_clip:tiny-clip/tiny-clip.pt"
    assert not (tmp_path / "toy.image.npz.partial.npz").exists()
    assert not np.allclose(stored.features[1], stored.features[2])

    encode_images.main([*args, "--output", str(tmp_path / "again.npz"), "--batch_size", "3"])  # deterministic
    np.testing.assert_allclose(load_item_features(str(tmp_path / "again.npz")).features, stored.features, atol=1e-5)

    from open_clip.transform import PreprocessCfg, image_transform_v2  # the checkpoint's weights, the model's transform

    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    with torch.no_grad():
        expected = model.encode_image(preprocess(Image.open(images / "i2.png").convert("RGB"))[None])
    np.testing.assert_allclose(stored.features[2], expected[0].numpy(), atol=1e-5)

    data_path = tmp_path / "toy"
    encode_images.main([*args[:-6], "--dataset", "toy", "--data_path", str(data_path), "--fp16", "--normalize"])
    half = load_item_features(str(data_path / "toy.image.npz"))
    assert half.features.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(half.features.astype(np.float32), axis=1), 1.0, atol=1e-3)


def test_encode_images_resumes(encode_images, tiny_clip, tmp_path, monkeypatch, stops_with):
    from recbole_cemg.data.features import load_item_features

    _, checkpoint = tiny_clip
    images = tmp_path / "images"
    images.mkdir()
    for i, color in enumerate(["red", "green", "blue"]):
        (images / f"i{i}.png").write_bytes(image_bytes(color, "PNG"))
    output = tmp_path / "toy.image.npz"
    args = ["--image_dir", str(images), "--model", "tiny-clip", "--pretrained", str(checkpoint), "--device", "cpu",
            "--batch_size", "1", "--chunk_size", "1", "--output", str(output)]
    sizes, interrupt_at = [], [2]
    encode = encode_images.OpenCLIPImageEncoder.encode

    def counted(self, pixels):
        sizes.append(len(pixels))
        if len(sizes) == interrupt_at[0]:
            raise KeyboardInterrupt
        return encode(self, pixels)

    monkeypatch.setattr(encode_images.OpenCLIPImageEncoder, "encode", counted)
    with stops_with("run the same command again to resume", code=130):
        encode_images.main(args)
    assert load_item_features(f"{output}.partial.npz").item_tokens.tolist() == ["i0"]
    sizes.clear()
    interrupt_at[0] = 0
    encode_images.main(args)
    assert sum(sizes) == 2  # only the two images missing from the partial file
    assert load_item_features(str(output)).item_tokens.tolist() == ["i0", "i1", "i2"]
