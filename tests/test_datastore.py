"""File datastore: safe names, atomic writes, checksums, transfers, local and S3."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from registry.datastore import DatastoreError, FileDatastore, UnsafePathError


def _write_bytes(payload: bytes):
    def writer(path: str) -> None:
        with open(path, "wb") as stream:
            stream.write(payload)

    return writer


@pytest.fixture
def store(tmp_path: Path) -> FileDatastore:
    return FileDatastore(tmp_path / "repo")


def test_template_path_is_readable_and_inside_root(store: FileDatastore) -> None:
    rel = store.relative_path("calexp", "u/me/isr", {"instrument": "MegaPrime", "visit": 1001, "detector": 12})
    assert rel == "u/me/isr/calexp/12/1001/MegaPrime/calexp_12_1001_MegaPrime_u_me_isr.fits"


@pytest.mark.parametrize("bad", ["../../etc", "/abs", "a/b", ".hidden", "x\0y", "", "a b", ".."])
def test_unsafe_data_id_values_are_rejected(store: FileDatastore, bad: str) -> None:
    with pytest.raises(UnsafePathError, match="detector"):
        store.relative_path("calexp", "run", {"detector": bad})


@pytest.mark.parametrize("bad", ["../x", "/abs", "a/../b", "a//b", "trailing/"])
def test_unsafe_run_names_are_rejected(store: FileDatastore, bad: str) -> None:
    with pytest.raises(UnsafePathError):
        store.relative_path("calexp", bad, {"detector": 1})


def test_custom_template_missing_key_is_clear(tmp_path: Path) -> None:
    ds = FileDatastore(tmp_path, templates={"deepCoadd": "{run}/{band}/{tract}"})
    with pytest.raises(UnsafePathError, match="'band'"):
        ds.relative_path("deepCoadd", "run", {"tract": 1})


def test_write_is_atomic_and_checksummed(store: FileDatastore) -> None:
    payload = os.urandom(100_000)
    rel = store.relative_path("raw", "raw/all", {"exposure": 1, "detector": 2})
    stored = store.write(rel, _write_bytes(payload))
    assert stored.size == len(payload)
    assert stored.checksum == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert store.exists(stored.uri)
    assert Path(store.path_from_uri(stored.uri)).read_bytes() == payload
    assert store.checksum(stored.uri) == stored.checksum
    with pytest.raises(DatastoreError, match="overwrite"):
        store.write(rel, _write_bytes(b"x"))


def test_failed_writer_leaves_nothing(store: FileDatastore) -> None:
    rel = store.relative_path("raw", "raw/all", {"exposure": 1, "detector": 3})

    def broken(path: str) -> None:
        with open(path, "wb") as stream:
            stream.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.write(rel, broken)
    assert not os.path.exists(store.full_path(rel))
    leftovers = [p for p in Path(store.root).rglob("*") if p.is_file()]
    assert leftovers == []


@pytest.mark.parametrize("mode", ["copy", "move", "symlink", "direct"])
def test_transfer_modes(store: FileDatastore, tmp_path: Path, mode: str) -> None:
    source = tmp_path / "incoming.fits"
    source.write_bytes(b"SIMPLE  = T" + b" " * 100)
    rel = store.relative_path("raw", "raw/all", {"exposure": 7, "detector": 0})
    stored = store.transfer(str(source), rel, mode)
    assert stored.size == source.stat().st_size if mode != "move" else stored.size > 0
    assert store.exists(stored.uri) or mode == "direct"
    if mode == "move":
        assert not source.exists()
    if mode == "symlink":
        assert os.path.islink(store.full_path(rel))
    if mode == "direct":
        assert stored.uri == source.resolve().as_uri()


def test_remove_only_inside_root(store: FileDatastore, tmp_path: Path) -> None:
    outside = tmp_path / "keep.txt"
    outside.write_text("x")
    store.remove(outside.as_uri())
    assert outside.exists()
    rel = store.relative_path("raw", "r", {"exposure": 1})
    stored = store.write(rel, _write_bytes(b"abc"))
    store.remove(stored.uri)
    assert not store.exists(stored.uri)


def test_orphans_lists_unregistered_files(store: FileDatastore) -> None:
    a = store.write(store.relative_path("raw", "r", {"exposure": 1}), _write_bytes(b"a"))
    b = store.write(store.relative_path("raw", "r", {"exposure": 2}), _write_bytes(b"b"))
    assert store.orphans({a.uri}) == [b.uri]


@pytest.mark.s3
def test_s3_write_read_remove_multipart(s3_server) -> None:
    import uuid

    root = s3_server.url(f"repo-{uuid.uuid4().hex}")
    ds = FileDatastore(root, storage_options=s3_server.storage_options, upload_chunksize=5 * 2**20)
    payload = os.urandom(12 * 2**20 + 123)  # three parts of a multi-part upload
    rel = ds.relative_path("calexp", "u/me/run", {"visit": 1, "detector": 2})
    stored = ds.write(rel, _write_bytes(payload))
    assert stored.uri.startswith("s3://") and stored.uri.endswith(".fits")
    assert stored.size == len(payload)
    assert stored.checksum == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert ds.exists(stored.uri)
    assert ds.checksum(stored.uri) == stored.checksum
    assert ds.fs.cat_file(ds.path_from_uri(stored.uri)) == payload
    assert ds.orphans(set()) == [stored.uri]
    ds.remove(stored.uri)
    assert not ds.exists(stored.uri)


@pytest.mark.s3
def test_s3_failed_writer_uploads_nothing(s3_server) -> None:
    import uuid

    root = s3_server.url(f"repo-{uuid.uuid4().hex}")
    ds = FileDatastore(root, storage_options=s3_server.storage_options)
    rel = ds.relative_path("calexp", "run", {"visit": 3})

    def broken(path: str) -> None:
        Path(path).write_bytes(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        ds.write(rel, broken)
    assert not ds.fs.exists(ds.full_path(rel))


@pytest.mark.s3
def test_s3_transfer_copy_from_local(s3_server, tmp_path: Path) -> None:
    import uuid

    ds = FileDatastore(s3_server.url(f"repo-{uuid.uuid4().hex}"), storage_options=s3_server.storage_options)
    source = tmp_path / "raw.fits"
    source.write_bytes(b"x" * 5000)
    stored = ds.transfer(str(source), ds.relative_path("raw", "raw/all", {"exposure": 1}), "copy")
    assert ds.exists(stored.uri) and stored.size == 5000
