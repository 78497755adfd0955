"""`charnn data`: the built-in corpus and downloads, against a local HTTP server."""

import hashlib
import http.server
import socket
import threading

import pytest

import charnn.text.builtin as corpora
from charnn.errors import CharnnError
from charnn.text.builtin import Corpus, get_corpus, pydoc_text

from conftest import run_charnn


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www over HTTP on a free localhost port."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/input.txt"


@pytest.fixture
def fake_corpus(monkeypatch, server):
    www, base = server
    content = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 500
    (www / "input.txt").write_text(content, encoding="utf-8")
    digest = hashlib.sha256(content.encode()).hexdigest()
    entry = Corpus("fake", "a test corpus", url=f"{base}/input.txt", sha256=digest)
    monkeypatch.setitem(corpora.CORPORA, "fake", entry)
    return content, base


def test_download_checks_sha_and_reports_progress(tmp_path, fake_corpus):
    content, _ = fake_corpus
    seen = []
    path = get_corpus(
        "fake", tmp_path / "data", on_progress=lambda n, total: seen.append((n, total))
    )
    assert path.read_text(encoding="utf-8") == content
    assert seen[-1] == (len(content), len(content))


def test_download_with_wrong_content_writes_nothing(tmp_path, fake_corpus, server):
    www, base = server
    (www / "other.txt").write_text("not the right file", encoding="utf-8")
    with pytest.raises(CharnnError, match="SHA-256"):
        get_corpus("fake", tmp_path / "data", url=f"{base}/other.txt")
    assert not (tmp_path / "data" / "fake.txt").exists()


def test_offline_download_is_a_clear_error(tmp_path, fake_corpus):
    with pytest.raises(CharnnError, match="offline"):
        get_corpus("fake", tmp_path, url=closed_port_url())
    with pytest.raises(CharnnError, match="unknown corpus"):
        get_corpus("nope", tmp_path)


def test_builtin_corpus_is_offline_and_stable(tmp_path):
    path = get_corpus("pydoc", tmp_path)
    text = path.read_text(encoding="utf-8")
    assert text == pydoc_text() and 300_000 < len(text) < 1_000_000


def test_cli_data_list_get_and_errors(tmp_path, server):
    www, base = server
    listing = run_charnn("data", "list")
    assert listing.returncode == 0
    assert "pydoc" in listing.stdout and "tinyshakespeare" in listing.stdout

    got = run_charnn("data", "get", "pydoc", "--data-dir", str(tmp_path / "d"))
    assert got.returncode == 0 and got.stdout.strip() == str(tmp_path / "d" / "pydoc.txt")

    (www / "input.txt").write_text("a corrupted mirror", encoding="utf-8")
    bad = run_charnn(
        "data",
        "get",
        "tinyshakespeare",
        "--data-dir",
        str(tmp_path / "d"),
        "--url",
        f"{base}/input.txt",
    )
    assert bad.returncode == 1 and "SHA-256" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "d" / "tinyshakespeare.txt").exists()

    offline = run_charnn(
        "data",
        "get",
        "tinyshakespeare",
        "--url",
        closed_port_url(),
        "--data-dir",
        str(tmp_path / "d"),
    )
    assert offline.returncode == 1 and "offline" in offline.stderr
