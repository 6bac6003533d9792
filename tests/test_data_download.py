"""Tests of llmkit.data downloads against a local HTTP server (never the real network).

A ThreadingHTTPServer on 127.0.0.1 (port chosen by the OS) serves a good file, a file
with the wrong bytes, a transfer cut in the middle, a 404 and a slow response. The tests
check that good downloads land in place with no temporary file left, that every failure
leaves the destination folder empty, and that ``path()`` falls back and reports clearly.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmkit import data
from llmkit.data import fetch, registry

BODY = b"".join(b"line %d of the test file\n" % i for i in range(20_000))  # ~500 kB
BODY_SHA = hashlib.sha256(BODY).hexdigest()
CORRUPT = BODY[:-10] + b"0123456789"  # same length, different bytes


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: dict[str, int] = {}

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def _send(self, body: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (the http.server API)
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path == "/good":
            self._send(BODY)
        elif self.path == "/corrupt":
            self._send(CORRUPT)
        elif self.path == "/cut":
            # Announce the whole file, send half of it, then drop the connection.
            self.close_connection = True
            self._send(BODY[: len(BODY) // 2], length=len(BODY))
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        elif self.path == "/longer":
            self._send(BODY + b"extra bytes")
        elif self.path == "/slow":
            time.sleep(1.0)
            self._send(BODY)
        else:
            self.send_error(404, "no such file")


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Some tests hang up on purpose (timeouts, broken reads): ignore the broken pipes.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/x"


@pytest.fixture(autouse=True)
def _clean_env(tmp_path, monkeypatch):
    """No mirror, an empty cache, and a fresh verification memo for every test."""
    monkeypatch.delenv("LLMKIT_DATA_MIRROR", raising=False)
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetch, "_VERIFIED", {})
    Handler.hits.clear()


def _fake_entry(monkeypatch, url: str, *alt_urls: str, name: str = "fake-set") -> data.Entry:
    """Register a small data set served by the local server."""
    e = data.Entry(
        name=name,
        path=f"fake/{name}.txt",
        url=url,
        alt_urls=tuple(alt_urls),
        sha256=BODY_SHA,
        size=len(BODY),
        records=20_000,
        unit="lines",
        license="CC0",
    )
    monkeypatch.setitem(registry.REGISTRY, name, e)
    return e


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------- download()


def test_download_good_file(server, tmp_path):
    dest = tmp_path / "dl" / "sub" / "file.txt"
    out = data.download(f"{server}/good", dest, BODY_SHA, size=len(BODY), desc="good")
    assert out == dest
    assert dest.read_bytes() == BODY
    assert _files(dest.parent) == ["file.txt"]  # no temporary file left behind


def test_download_replaces_an_existing_file(server, tmp_path):
    dest = tmp_path / "file.txt"
    dest.write_bytes(b"old")
    data.download(f"{server}/good", dest, BODY_SHA.upper(), progress=False)
    assert dest.read_bytes() == BODY
    assert _files(tmp_path) == ["file.txt"]


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    dest = tmp_path / "dl" / "file.txt"
    with pytest.raises(data.ChecksumError) as info:
        data.download(f"{server}/corrupt", dest, BODY_SHA, size=len(BODY), desc="my-set")
    msg = str(info.value)
    assert "sha256 mismatch" in msg and "my-set" in msg
    assert BODY_SHA in msg and hashlib.sha256(CORRUPT).hexdigest() in msg
    assert _files(dest.parent) == []


def test_download_checksum_mismatch_keeps_an_existing_file(server, tmp_path):
    dest = tmp_path / "file.txt"
    dest.write_bytes(b"previous content")
    with pytest.raises(data.ChecksumError):
        data.download(f"{server}/corrupt", dest, BODY_SHA)
    assert dest.read_bytes() == b"previous content"
    assert _files(tmp_path) == ["file.txt"]


def test_download_cut_connection_leaves_nothing(server, tmp_path):
    dest = tmp_path / "dl" / "file.txt"
    # Without the expected size, the Content-Length alone must catch the truncation.
    with pytest.raises(data.DownloadError, match=r"\d+ of \d+"):
        data.download(f"{server}/cut", dest, BODY_SHA)
    assert _files(dest.parent) == []
    with pytest.raises(data.DownloadError):
        data.download(f"{server}/cut", dest, BODY_SHA, size=len(BODY))
    assert _files(dest.parent) == []


def test_download_exception_while_reading_leaves_nothing(server, tmp_path, monkeypatch):
    real_urlopen = urllib.request.urlopen

    class Breaking:
        def __init__(self, response):
            self._response = response
            self.headers = response.headers
            self._calls = 0

        def read(self, amt=None):
            self._calls += 1
            if self._calls > 1:
                raise ConnectionResetError("connection reset by peer")
            return self._response.read(1000)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._response.close()

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Breaking(real_urlopen(*a, **k)))
    dest = tmp_path / "dl" / "file.txt"
    with pytest.raises(data.DownloadError, match="ConnectionResetError"):
        data.download(f"{server}/good", dest, BODY_SHA, size=len(BODY))
    assert _files(dest.parent) == []


def test_download_wrong_length_is_rejected_early(server, tmp_path):
    dest = tmp_path / "file.txt"
    with pytest.raises(data.ChecksumError, match="expected"):
        data.download(f"{server}/longer", dest, BODY_SHA, size=len(BODY))
    assert _files(tmp_path) == []


def test_download_http_error(server, tmp_path):
    with pytest.raises(data.DownloadError, match="HTTP 404"):
        data.download(f"{server}/missing", tmp_path / "f", BODY_SHA)
    assert _files(tmp_path) == []


def test_download_timeout(server, tmp_path):
    with pytest.raises(data.DownloadError):
        data.download(f"{server}/slow", tmp_path / "f", BODY_SHA, timeout=0.2)
    assert _files(tmp_path) == []


def test_download_refused_connection(closed_port_url, tmp_path):
    with pytest.raises(data.DownloadError):
        data.download(closed_port_url, tmp_path / "f", BODY_SHA)
    assert _files(tmp_path) == []


# --------------------------------------------------------------------------------- path()


def test_path_downloads_into_the_cache_once(server, tmp_path, monkeypatch):
    e = _fake_entry(monkeypatch, f"{server}/good")
    p = data.path(e.name)
    assert p == (tmp_path / "cache" / e.path).absolute()
    assert p.read_bytes() == BODY
    assert _files(p.parent) == [p.name]
    assert data.path(e.name) == p  # served from the cache
    assert Handler.hits == {"/good": 1}


def test_path_falls_back_to_alt_urls(server, monkeypatch, closed_port_url):
    e = _fake_entry(
        monkeypatch, closed_port_url, f"{server}/missing", f"{server}/corrupt", f"{server}/good"
    )
    assert data.path(e.name).read_bytes() == BODY
    assert Handler.hits == {"/missing": 1, "/corrupt": 1, "/good": 1}


def test_path_offline_raises_one_clear_error(closed_port_url, tmp_path, monkeypatch):
    e = data.entry("tinyshakespeare")
    monkeypatch.setitem(registry.REGISTRY, e.name, replace(e, url=closed_port_url, alt_urls=()))
    with pytest.raises(data.DataUnavailableError) as info:
        data.path("tinyshakespeare")
    msg = str(info.value)
    assert "tinyshakespeare" in msg
    assert closed_port_url in msg
    assert "LLMKIT_DATA_MIRROR" in msg and "export LLMKIT_DATA_MIRROR=" in msg
    assert str(tmp_path / "cache") in msg
    assert isinstance(info.value, RuntimeError)
    assert not (tmp_path / "cache" / "tinyshakespeare").exists() or not _files(
        tmp_path / "cache" / "tinyshakespeare"
    )


def test_path_offline_when_urllib_fails(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(data.DataUnavailableError) as info:
        data.path("wnut17-dev")
    msg = str(info.value)
    e = data.entry("wnut17-dev")
    assert "wnut17-dev" in msg and e.url in msg and "LLMKIT_DATA_MIRROR" in msg
    assert "network is unreachable" in msg


def test_path_reports_mirror_without_the_file(closed_port_url, tmp_path, monkeypatch):
    e = _fake_entry(monkeypatch, closed_port_url)
    monkeypatch.setenv("LLMKIT_DATA_MIRROR", str(tmp_path / "mirror"))
    with pytest.raises(data.DataUnavailableError, match="LLMKIT_DATA_MIRROR"):
        data.path(e.name)


def test_path_all_urls_corrupt(server, tmp_path, monkeypatch):
    e = _fake_entry(monkeypatch, f"{server}/corrupt")
    with pytest.raises(data.DataUnavailableError, match="sha256"):
        data.path(e.name)
    assert _files(tmp_path / "cache" / "fake") == []


def test_path_refetches_a_corrupt_cached_file(server, tmp_path, monkeypatch):
    e = _fake_entry(monkeypatch, f"{server}/good")
    cached = tmp_path / "cache" / e.path
    cached.parent.mkdir(parents=True)
    cached.write_bytes(CORRUPT)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        p = data.path(e.name)
    assert p.read_bytes() == BODY
    assert Handler.hits == {"/good": 1}


def test_path_rejects_a_corrupt_cached_file_when_offline(closed_port_url, tmp_path, monkeypatch):
    e = _fake_entry(monkeypatch, closed_port_url)
    cached = tmp_path / "cache" / e.path
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    with pytest.warns(RuntimeWarning, match="corrupt"):
        with pytest.raises(data.DataUnavailableError):
            data.path(e.name)
    assert not cached.exists()


def test_path_notices_a_cached_file_changed_after_verification(server, tmp_path, monkeypatch):
    e = _fake_entry(monkeypatch, f"{server}/good")
    p = data.path(e.name)
    assert data.path(e.name) == p  # verified and remembered
    before = p.stat().st_mtime_ns
    p.write_bytes(CORRUPT)  # same size; the memo is keyed on mtime and inode too
    os.utime(p, ns=(before + 10**9, before + 10**9))  # as if edited a second later
    with pytest.warns(RuntimeWarning, match="sha256 mismatch"):
        assert data.path(e.name).read_bytes() == BODY
    assert Handler.hits == {"/good": 2}


def test_path_prefers_the_mirror(closed_port_url, tmp_path, monkeypatch):
    e = _fake_entry(monkeypatch, closed_port_url)
    mirror = tmp_path / "mirror"
    (mirror / "fake").mkdir(parents=True)
    (mirror / e.path).write_bytes(BODY)
    monkeypatch.setenv("LLMKIT_DATA_MIRROR", str(mirror))
    assert data.path(e.name) == (mirror / e.path).absolute()


def test_path_corrupt_mirror_is_an_error(closed_port_url, tmp_path, monkeypatch):
    e = _fake_entry(monkeypatch, closed_port_url)
    mirror = tmp_path / "mirror"
    (mirror / "fake").mkdir(parents=True)
    (mirror / e.path).write_bytes(CORRUPT)
    monkeypatch.setenv("LLMKIT_DATA_MIRROR", str(mirror))
    with pytest.raises(data.ChecksumError) as info:
        data.path(e.name)
    assert BODY_SHA in str(info.value)
    assert (mirror / e.path).read_bytes() == CORRUPT  # the mirror is never modified


def test_cache_dir_default(monkeypatch):
    monkeypatch.delenv("LLMKIT_CACHE")
    assert data.cache_dir() == Path.home() / ".cache" / "llmkit"
