"""`fastdet fetch` against a local HTTP server on 127.0.0.1 serving archives the tests make."""
import io
import socket
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fastdet_cli.errors import FastdetError
from fastdet_cli.fetch import ENTRIES, Entry, Part, download, fetch, safe_extract, sha256_of, target_dir


def make_tar(members: dict[str, bytes], links: dict[str, str] | None = None, gz=True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


class Server:
    """Serves `files` by path; honours `Range: bytes=N-`; `cut_after` truncates the next response."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append((self.path, rng))
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_after is not None:
                    body, outer.cut_after = body[: outer.cut_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTDET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


MODEL_FILES = {"tinymodel/model.pdmodel": b"program" * 1000, "tinymodel/model.pdiparams": b"w" * 50000,
               "tinymodel/infer_cfg.yml": b"arch: PicoDet\n"}


def entry(url: str, sha=None) -> Entry:
    return Entry("tinymodel", "model", "test", (Part(url, sha),))


def test_fetch_unpacks_into_the_cache(server, cache):
    blob = make_tar(MODEL_FILES)
    server.files["/m.tgz"] = blob
    path = fetch(entry(server.url + "/m.tgz", sha256_of_bytes(blob)))
    assert path == target_dir("tinymodel") / "tinymodel"
    assert (path / "model.pdiparams").read_bytes() == MODEL_FILES["tinymodel/model.pdiparams"]
    # cached: a second call does not download again
    n = len(server.requests)
    assert fetch(entry(server.url + "/m.tgz")) == path and len(server.requests) == n


def sha256_of_bytes(b: bytes) -> str:
    import hashlib

    return hashlib.sha256(b).hexdigest()


def test_checksum_mismatch_is_refused(server, cache):
    server.files["/m.tgz"] = make_tar(MODEL_FILES)
    with pytest.raises(FastdetError, match="checksum mismatch"):
        fetch(entry(server.url + "/m.tgz", "0" * 64))
    assert not target_dir("tinymodel").exists()


@pytest.mark.parametrize("members,links,match", [
    ({"../evil.txt": b"x"}, None, "unsafe path"),
    ({"/etc/evil.txt": b"x"}, None, "unsafe path"),
    ({"ok/a.txt": b"x"}, {"ok/link": "../../outside"}, "points outside"),
    ({"ok/a.txt": b"x"}, {"ok/abs": "/etc/passwd"}, "points outside"),
])
def test_malicious_archives_are_refused(server, cache, tmp_path, members, links, match):
    server.files["/bad.tgz"] = make_tar(members, links)
    with pytest.raises(FastdetError, match=match):
        fetch(entry(server.url + "/bad.tgz"))
    assert not target_dir("tinymodel").exists()
    assert not (tmp_path / "evil.txt").exists() and not (cache / "evil.txt").exists()
    assert not list(cache.glob("fetched/.*"))  # no half-extracted temporary folder left behind


def test_interrupted_transfer_resumes(server, cache):
    blob = make_tar(MODEL_FILES, gz=False)
    server.files["/m.tar"] = blob
    server.cut_after = len(blob) // 3
    with pytest.raises(FastdetError, match="interrupted"):
        fetch(entry(server.url + "/m.tar"))
    part = cache / "downloads" / "m.tar.part"
    assert part.exists() and 0 < part.stat().st_size < len(blob)
    assert not target_dir("tinymodel").exists()
    path = fetch(entry(server.url + "/m.tar"))
    assert server.requests[-1][1] == f"bytes={len(blob) // 3}-"  # resumed, not restarted
    assert sha256_of(cache / "downloads" / "m.tar") == sha256_of_bytes(blob)
    assert (path / "model.pdmodel").read_bytes() == MODEL_FILES["tinymodel/model.pdmodel"]


def test_no_network_is_a_clear_error(cache, tmp_path):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FastdetError, match="cannot download .* network"):
        download(f"http://127.0.0.1:{port}/x.tgz", tmp_path / "x.tgz", timeout=5)


def test_http_404_is_clear(server, tmp_path):
    with pytest.raises(FastdetError, match="HTTP 404"):
        download(server.url + "/missing.tgz", tmp_path / "m.tgz")


def test_not_an_archive(tmp_path):
    p = tmp_path / "x.tgz"
    p.write_bytes(b"plain text")
    with pytest.raises(FastdetError, match="not a tar or zip"):
        safe_extract(p, tmp_path / "out")


def test_the_table_holds_the_reference_models():
    assert ENTRIES["ppyoloe_crn_l_300e_coco"].parts[0].url.endswith("ppyoloe_crn_l_300e_coco.tgz")
    assert ENTRIES["ppyoloe_crn_l_300e_coco_qat"].parts[0].url.endswith("ppyoloe_crn_l_300e_coco_qat.tar")
    assert ENTRIES["coco_val2017"].kind == "dataset"


def test_fetch_command_with_url(server, cache, capsys, monkeypatch):
    from fastdet_cli.cli import main

    monkeypatch.setenv("COLUMNS", "300")
    server.files["/m.tgz"] = make_tar({f"ppyoloe_crn_l_300e_coco/{k.split('/')[1]}": v for k, v in MODEL_FILES.items()})
    assert main(["fetch", "ppyoloe_crn_l_300e_coco", "--url", server.url + "/m.tgz"]) == 0
    out = capsys.readouterr().out
    assert "--model" in out and (
        target_dir("ppyoloe_crn_l_300e_coco") / "ppyoloe_crn_l_300e_coco" / "infer_cfg.yml").exists()
