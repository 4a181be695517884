"""File datastore on fsspec: where dataset bytes live, local disk or ``s3://`` alike.

The datastore only knows about files. It turns a (dataset type, run, data ID) into a
path through a template, writes files so that nothing half-written is ever visible
(temporary name, then move; an S3 object only appears once its upload completes),
checksums them, and deletes them. Which datasets exist is the registry's business: the
butler registers a file only after the datastore has put it in place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import shutil
import string
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import fsspec
from fsspec.core import url_to_fs

log = logging.getLogger(__name__)

#: Data-ID values and template words that may become one path component.
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]{0,127}$")
_CHUNK = 8 << 20

DEFAULT_TEMPLATE = "{run}/{dataset_type}/{data_id_path}/{dataset_type}_{data_id_name}_{run_name}"


class DatastoreError(OSError):
    """A file could not be written, read or removed in the datastore."""


class UnsafePathError(ValueError):
    """A data-ID value or run name would escape the datastore root or is not a safe name."""


@dataclass(frozen=True)
class StoredFile:
    """What the datastore wrote: enough for the registry to record the dataset."""

    uri: str
    size: int
    checksum: str


def validate_component(key: str, value: Any) -> str:
    """Return ``value`` as a path component or raise :class:`UnsafePathError` naming ``key``."""
    text = str(value)
    if isinstance(value, bool) or not _SAFE_COMPONENT.match(text) or ".." in text:
        raise UnsafePathError(
            f"invalid value {text!r} for {key!r}: only letters, digits, '_', '-', '+' and '.' "
            "are allowed in names that become file paths (no '/', no '..', not starting with '.')"
        )
    return text


def validate_run(run: str) -> list[str]:
    """Split a run name into validated path segments (runs may be nested with '/')."""
    if not run or run.startswith("/") or run.endswith("/"):
        raise UnsafePathError(f"invalid run name {run!r}")
    return [validate_component("run", part) for part in run.split("/")]


def sha256_file(fs: fsspec.AbstractFileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class FileDatastore:
    """Dataset files under one root URL (a local directory or ``s3://bucket/prefix``).

    Parameters
    ----------
    root
        Local path or fsspec URL of the datastore root.
    storage_options
        Passed to fsspec (e.g. ``{"client_kwargs": {"endpoint_url": ...}}`` for S3).
    templates
        Optional per-dataset-type file name templates, e.g.
        ``{"deepCoadd": "{run}/{dataset_type}/{band}/{tract}/{patch}/{dataset_type}_{band}_{tract}_{patch}"}``.
        Any ``{key}`` is a data-ID key, ``{run}``, ``{dataset_type}``, ``{run_name}``
        (run with '/' replaced by '_'), ``{data_id_path}`` or ``{data_id_name}``.
    upload_chunksize
        Part size of multi-part uploads to object stores (s3fs's default when None;
        files of at least twice this size go up in parts).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        templates: Mapping[str, str] | None = None,
        upload_chunksize: int | None = None,
    ) -> None:
        self.storage_options = dict(storage_options or {})
        root_text = os.fspath(root)
        self.fs, fs_root = url_to_fs(root_text, **self.storage_options)
        self.is_local = "file" in _protocols(self.fs)
        if self.is_local:
            fs_root = os.path.abspath(fs_root)
            os.makedirs(fs_root, exist_ok=True)
        self.root = fs_root.rstrip("/")
        self.root_url = root_text if not self.is_local else self.root
        self.templates = dict(templates or {})
        self.upload_chunksize = upload_chunksize

    # -- naming ----------------------------------------------------------------------
    def relative_path(
        self, dataset_type: str, run: str, data_id: Mapping[str, Any], extension: str = ".fits"
    ) -> str:
        """Path of a dataset's file relative to the root, from the template.

        Every data-ID value is validated first, so a value such as ``../../etc`` or
        ``/abs`` can never produce a path outside the root.
        """
        validate_component("dataset_type", dataset_type)
        run_parts = validate_run(run)
        keys = sorted(k for k in data_id if k != "instrument") + (
            ["instrument"] if "instrument" in data_id else []
        )
        values = {k: validate_component(k, data_id[k]) for k in keys}
        fields = {
            "run": "/".join(run_parts),
            "run_name": "_".join(run_parts),
            "dataset_type": dataset_type,
            "data_id_path": "/".join(values[k] for k in keys) or "_",
            "data_id_name": "_".join(values[k] for k in keys) or "_",
            **values,
        }
        template = self.templates.get(dataset_type, DEFAULT_TEMPLATE)
        try:
            rel = string.Formatter().vformat(template, (), fields)
        except KeyError as exc:
            raise UnsafePathError(
                f"template for {dataset_type!r} needs data-ID key {exc.args[0]!r}, "
                f"which data ID {dict(data_id)} does not have"
            ) from None
        rel = posixpath.normpath(rel) + extension
        if rel.startswith("/") or rel.startswith("..") or "/../" in rel:
            raise UnsafePathError(f"template produced a path outside the datastore: {rel!r}")
        return rel

    def full_path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def uri_for(self, relative: str) -> str:
        """The URI stored in the registry for a file at ``relative``."""
        path = self.full_path(relative)
        if self.is_local:
            return Path(path).as_uri()
        return self.fs.unstrip_protocol(path)

    def path_from_uri(self, uri: str) -> str:
        """The filesystem path of ``uri`` for this datastore's filesystem."""
        if self.is_local and uri.startswith("file://"):
            from urllib.parse import unquote, urlparse

            return unquote(urlparse(uri).path)
        return self.fs._strip_protocol(uri)  # noqa: SLF001 - fsspec's documented way to map URLs

    # -- writing ---------------------------------------------------------------------
    @contextmanager
    def _local_staging(self, relative: str) -> Iterator[str]:
        """A temporary local file path to write into; removed if it is still there at the end."""
        if self.is_local:
            final = self.full_path(relative)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            tmp = os.path.join(os.path.dirname(final), f".tmp-{uuid.uuid4().hex}-{os.path.basename(final)}")
        else:
            fd, tmp = tempfile.mkstemp(prefix="coadd-upload-", suffix=os.path.splitext(relative)[1])
            os.close(fd)
        try:
            yield tmp
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def write(self, relative: str, writer: Callable[[str], None], *, overwrite: bool = False) -> StoredFile:
        """Write a file with ``writer(local_tmp_path)`` and move it into place atomically.

        Returns the URI, size and checksum. If ``writer`` fails, nothing is left behind.
        An existing file is only replaced with ``overwrite``.
        """
        final = self.full_path(relative)
        if not overwrite and self.fs.exists(final):
            raise DatastoreError(f"refusing to overwrite existing file {self.uri_for(relative)}")
        with self._local_staging(relative) as tmp:
            writer(tmp)
            size = os.path.getsize(tmp)
            checksum = _sha256_local(tmp)
            if self.is_local:
                os.replace(tmp, final)
            else:
                # An S3 object becomes visible only when its (multi-part) upload completes.
                kwargs = {"chunksize": self.upload_chunksize} if self.upload_chunksize else {}
                self.fs.put_file(tmp, final, **kwargs)
        log.debug("wrote %s (%d bytes)", relative, size)
        return StoredFile(uri=self.uri_for(relative), size=size, checksum=checksum)

    def transfer(self, source: str, relative: str, mode: str = "copy", *, overwrite: bool = False) -> StoredFile:
        """Bring an existing file into the datastore (ingest): copy, move, symlink or direct.

        ``direct`` leaves the file where it is and records its own URI.
        """
        if mode == "direct":
            src_fs, src_path = url_to_fs(source, **(self.storage_options if "://" in source else {}))
            info = src_fs.info(src_path)
            uri = Path(src_path).resolve().as_uri() if "file" in _protocols(src_fs) else src_fs.unstrip_protocol(src_path)
            return StoredFile(uri=uri, size=int(info["size"]), checksum=sha256_file(src_fs, src_path))
        if mode not in ("copy", "move", "symlink"):
            raise ValueError(f"unknown transfer mode {mode!r}: use copy, move, symlink or direct")
        if mode == "symlink":
            if not self.is_local or "://" in source:
                raise DatastoreError("symlink transfer needs a local source and a local datastore")
            final = self.full_path(relative)
            if os.path.lexists(final):
                if not overwrite:
                    raise DatastoreError(f"refusing to overwrite existing file {final}")
                os.unlink(final)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            source_abs = os.path.abspath(source)
            checksum = _sha256_local(source_abs)
            tmp = os.path.join(os.path.dirname(final), f".tmp-{uuid.uuid4().hex}")
            os.symlink(source_abs, tmp)
            os.replace(tmp, final)
            return StoredFile(self.uri_for(relative), os.path.getsize(source_abs), checksum)

        def _copy(tmp: str) -> None:
            if "://" in source:
                src_fs, src_path = url_to_fs(source, **self.storage_options)
                src_fs.get_file(src_path, tmp)
            else:
                shutil.copyfile(source, tmp)

        stored = self.write(relative, _copy, overwrite=overwrite)
        if mode == "move":
            if "://" in source:
                src_fs, src_path = url_to_fs(source, **self.storage_options)
                src_fs.rm_file(src_path)
            else:
                os.unlink(source)
        return stored

    # -- reading and removing --------------------------------------------------------
    def exists(self, uri: str) -> bool:
        return bool(self.fs.exists(self.path_from_uri(uri)))

    def local_path_or_url(self, uri: str) -> str:
        """What a reader should open: a local path, or the URL itself for remote files."""
        return self.path_from_uri(uri) if self.is_local else uri

    def checksum(self, uri: str) -> str:
        return sha256_file(self.fs, self.path_from_uri(uri))

    def remove(self, uri: str, *, missing_ok: bool = True) -> None:
        """Delete a file; only files under the root are ever deleted."""
        path = self.path_from_uri(uri)
        if not (path == self.root or path.startswith(self.root + "/")):
            log.debug("not deleting %s: outside the datastore root", uri)
            return
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def orphans(self, known_uris: set[str]) -> list[str]:
        """Files under the root that the registry does not know (for a cleanup command)."""
        found = []
        for path in self.fs.find(self.root):
            name = posixpath.basename(path)
            if name in ("butler.yaml", "registry.sqlite3") or name.startswith("registry.sqlite3"):
                continue
            uri = Path(path).as_uri() if self.is_local else self.fs.unstrip_protocol(path)
            if uri not in known_uris:
                found.append(uri)
        return sorted(found)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


def _sha256_local(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
