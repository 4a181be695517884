"""The Butler: one facade over the registry (what exists) and the datastore (the bytes).

A repository is a directory (or object-store prefix) holding ``butler.yaml``, which
names the registry database and the datastore root. The embedded default is
``sqlite:///REPO/registry.sqlite3`` with the files under ``REPO/``.

Writing follows one rule: a file is written under a temporary name, moved into place
and checksummed, and only then registered, in one transaction. If registration fails
the file is deleted again, so a crash leaves at worst an unregistered orphan (see
:meth:`Butler.orphans`), never a registered dataset without its bytes.

Workers that must not touch the database (Dask workers, process pools) call
:meth:`Butler.write` and return the refs; the flow calls :meth:`Butler.register`.
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import fsspec
import yaml
from fsspec.core import url_to_fs

from registry.dataset_types import FILE_TEMPLATES, STANDARD_DATASET_TYPES
from registry.datastore import FileDatastore
from registry.formatters import formatter_for
from registry.refs import DatasetRef, DatasetType, RegistryError
from registry.registry import Registry

log = logging.getLogger(__name__)

CONFIG_NAME = "butler.yaml"
DEFAULT_REGISTRY_NAME = "registry.sqlite3"


class ButlerError(RegistryError):
    """A butler operation failed (missing repository, missing dataset...)."""


class DatasetNotFoundError(ButlerError, LookupError):
    """No dataset with that type and data ID in the given collections."""


class DatasetExistsError(ButlerError):
    """The dataset is already in the output run (use clobber to replace it)."""


@dataclass(frozen=True)
class RepoConfig:
    """What ``butler.yaml`` holds: where the registry and the datastore are.

    Credentials never go here: S3 keys come from the environment (``AWS_*``) or the
    usual configuration files, database passwords from ``PGPASSWORD``/``.pgpass`` or
    the URL given at run time.
    """

    registry_url: str
    datastore_url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The file form, with credentials removed (they are never written to disk)."""
        return {
            "registry": {"url": _without_password(self.registry_url)},
            "datastore": {"root": self.datastore_url, "storage_options": _without_secrets(self.storage_options)},
        }

    @classmethod
    def load(cls, repo: str, storage_options: Mapping[str, Any] | None = None) -> "RepoConfig":
        """Read ``butler.yaml`` of the repository at ``repo`` (a path or URI)."""
        config_path = _join(repo, CONFIG_NAME)
        options = dict(storage_options or {}) if _is_url(config_path) else {}
        try:
            with fsspec.open(config_path, "r", **options) as stream:
                data = yaml.safe_load(stream) or {}
        except FileNotFoundError:
            raise ButlerError(
                f"no repository at {repo} (no {CONFIG_NAME}); create one with 'coadd repo create {repo}'"
            ) from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RepoConfig":
        try:
            return cls(
                registry_url=str(data["registry"]["url"]),
                datastore_url=str(data["datastore"]["root"]),
                storage_options=dict(data["datastore"].get("storage_options") or {}),
            )
        except (KeyError, TypeError) as exc:
            raise ButlerError(f"invalid repository configuration: missing {exc}") from None


_SECRET_KEYS = {"key", "secret", "token", "password", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"}


def _without_secrets(options: Mapping[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for name, value in options.items():
        if name.lower() in _SECRET_KEYS:
            continue
        cleaned[name] = _without_secrets(value) if isinstance(value, Mapping) else value
    return cleaned


def _without_password(url: str) -> str:
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except Exception:  # noqa: BLE001 - not a database URL: keep it as given
        return url
    return parsed.set(password=None).render_as_string(hide_password=False) if parsed.password else url


def _is_url(text: str) -> bool:
    return "://" in text


def _join(root: str, name: str) -> str:
    return posixpath.join(root, name) if _is_url(root) else os.path.join(root, name)


class Butler:
    """Read and write datasets of one repository by type and data ID."""

    def __init__(self, registry: Registry, datastore: FileDatastore, *, repo: str, config: RepoConfig) -> None:
        self.registry = registry
        self.datastore = datastore
        self.repo = repo
        self.config = config

    # -- repository lifecycle ---------------------------------------------------------
    @classmethod
    def create(
        cls,
        repo: str | os.PathLike[str],
        *,
        registry_url: str | None = None,
        datastore_url: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> "Butler":
        """Create a repository: ``butler.yaml``, the registry schema, the standard types."""
        repo_text = os.fspath(repo)
        if not _is_url(repo_text):
            repo_text = os.path.abspath(repo_text)
            os.makedirs(repo_text, exist_ok=True)
        options = dict(storage_options or {})
        config_path = _join(repo_text, CONFIG_NAME)
        fs, path = url_to_fs(config_path, **(options if _is_url(config_path) else {}))
        if fs.exists(path) and not exist_ok:
            raise ButlerError(f"a repository already exists at {repo_text}")
        if registry_url is None:
            if _is_url(repo_text):
                raise ButlerError("a repository on an object store needs --registry-url (e.g. PostgreSQL)")
            registry_url = f"sqlite:///{os.path.join(repo_text, DEFAULT_REGISTRY_NAME)}"
        config = RepoConfig(
            registry_url=registry_url,
            datastore_url=datastore_url or repo_text,
            storage_options=options,
        )
        registry = Registry.create(registry_url, exist_ok=exist_ok)
        for dataset_type in STANDARD_DATASET_TYPES:
            registry.register_dataset_type(dataset_type)
        with fs.open(path, "w") as stream:
            yaml.safe_dump(config.to_dict(), stream, sort_keys=False)
        log.info("created repository %s", repo_text)
        return cls._from_config(repo_text, config, registry)

    @classmethod
    def open(cls, repo: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None) -> "Butler":
        """Open the repository at a directory path or URI (the folder with ``butler.yaml``)."""
        repo_text = os.fspath(repo)
        if repo_text.endswith(CONFIG_NAME):
            repo_text = repo_text[: -len(CONFIG_NAME)].rstrip("/") or "."
        if not _is_url(repo_text):
            repo_text = os.path.abspath(repo_text)
        options = dict(storage_options or {})
        config = RepoConfig.load(repo_text, options)
        if options:
            config = RepoConfig(config.registry_url, config.datastore_url, {**config.storage_options, **options})
        registry = Registry.open(config.registry_url)
        return cls._from_config(repo_text, config, registry)

    @classmethod
    def _from_config(cls, repo: str, config: RepoConfig, registry: Registry) -> "Butler":
        datastore = FileDatastore(
            config.datastore_url, storage_options=config.storage_options, templates=FILE_TEMPLATES
        )
        return cls(registry, datastore, repo=repo, config=config)

    def close(self) -> None:
        self.registry.close()

    def __enter__(self) -> "Butler":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------
    def _dataset_type(self, dataset_type: str | DatasetType) -> DatasetType:
        return dataset_type if isinstance(dataset_type, DatasetType) else self.registry.get_dataset_type(dataset_type)

    def write(
        self,
        obj: Any,
        dataset_type: str | DatasetType,
        data_id: Mapping[str, Any],
        run: str,
        *,
        unique_name: bool = False,
    ) -> DatasetRef:
        """Write ``obj``'s file (atomically, checksummed) and return its ref, unregistered.

        For workers: the flow registers the returned refs with :meth:`register`.
        ``unique_name`` adds the dataset ID to the file name, so a replacement never
        touches the file the registry currently points to.
        """
        dtype = self._dataset_type(dataset_type)
        ref = DatasetRef.new(dtype, data_id, run)
        formatter = formatter_for(dtype.storage_class)
        relative = self.datastore.relative_path(dtype.name, run, ref.data_id, formatter.extension)
        if unique_name:
            stem, ext = os.path.splitext(relative)
            relative = f"{stem}_{ref.id.hex[:12]}{ext}"
        # Anything already at this path is unregistered (the registry is checked by put);
        # it is an orphan of an interrupted write and is replaced.
        stored = self.datastore.write(relative, lambda tmp: formatter.write(obj, tmp), overwrite=True)
        return ref.with_file(stored.uri, stored.size, stored.checksum)

    def register(
        self,
        refs: Iterable[DatasetRef],
        *,
        replacing: Iterable[DatasetRef] = (),
        on_conflict: str = "fail",
    ) -> list[DatasetRef]:
        """Register written files in one transaction; on failure their files are deleted.

        ``replacing`` are older datasets removed in the same transaction; their files
        are deleted after the commit (unless another dataset still refers to them).
        """
        refs = list(refs)
        replacing = list(replacing)
        try:
            registered = self.registry.insert_datasets(refs, on_conflict=on_conflict, replacing=replacing)  # type: ignore[arg-type]
        except BaseException:
            for ref in refs:
                if ref.uri and self.registry.count_datasets_with_uri(ref.uri) == 0:
                    self.datastore.remove(ref.uri)
            raise
        new_uris = {r.uri for r in refs}
        for old in replacing:
            if old.uri and old.uri not in new_uris:
                self._delete_file_if_unreferenced(old.uri)
        return registered

    def put(
        self,
        obj: Any,
        dataset_type: str | DatasetType,
        data_id: Mapping[str, Any],
        run: str,
        *,
        clobber: bool = False,
    ) -> DatasetRef:
        """Write and register one dataset in RUN ``run`` (created if needed)."""
        dtype = self._dataset_type(dataset_type)
        self.registry.register_run(run)
        existing = self.registry.find_dataset(dtype, data_id, [run])
        if existing is not None and not clobber:
            raise DatasetExistsError(
                f"{dtype.name} {dict(existing.data_id)} already exists in run {run!r} (use clobber to replace it)"
            )
        ref = self.write(obj, dtype, data_id, run, unique_name=existing is not None)
        (registered,) = self.register([ref], replacing=[existing] if existing is not None else [])
        return registered

    # -- reading ----------------------------------------------------------------------
    def find(
        self,
        dataset_type: str | DatasetType,
        data_id: Mapping[str, Any],
        collections: str | Sequence[str],
        **kwargs: Any,
    ) -> DatasetRef:
        """The first matching dataset along ``collections``; :class:`DatasetNotFoundError` if none."""
        ref = self.registry.find_dataset(dataset_type, data_id, collections, **kwargs)
        if ref is None:
            name = dataset_type if isinstance(dataset_type, str) else dataset_type.name
            raise DatasetNotFoundError(f"no {name} with data ID {dict(data_id)} in collections {collections}")
        return ref

    def get(
        self,
        dataset_type: str | DatasetType | DatasetRef,
        data_id: Mapping[str, Any] | None = None,
        collections: str | Sequence[str] | None = None,
        **parameters: Any,
    ) -> Any:
        """Read a dataset by ref, or by type + data ID + collections.

        Read parameters go to the formatter: ``bbox=Box(...)`` reads only that section of
        an exposure (a FITS section read, locally or on S3).
        """
        if isinstance(dataset_type, DatasetRef):
            ref = dataset_type
        else:
            if data_id is None or collections is None:
                raise ButlerError("get needs a DatasetRef, or a dataset type with data_id and collections")
            ref = self.find(dataset_type, data_id, collections)
        if ref.uri is None:
            ref = self.registry.get_dataset(ref.id) or ref
        if ref.uri is None:
            raise DatasetNotFoundError(f"{ref} has no file")
        dtype = self._dataset_type(ref.dataset_type)
        formatter = formatter_for(dtype.storage_class)
        if dtype.storage_class == "RawImage" and "detector_name" not in parameters:
            parameters["detector_name"] = f"ccd{int(ref.data_id['detector']):02d}"
        return formatter.read(
            self.datastore.local_path_or_url(ref.uri),
            storage_options=self.datastore.storage_options,
            **parameters,
        )

    def exists(
        self, dataset_type: str | DatasetType, data_id: Mapping[str, Any], collections: str | Sequence[str]
    ) -> bool:
        """True if the dataset is registered and its file is there."""
        ref = self.registry.find_dataset(dataset_type, data_id, collections)
        return ref is not None and ref.uri is not None and self.datastore.exists(ref.uri)

    def query_datasets(
        self,
        dataset_type: str | DatasetType,
        collections: str | Sequence[str],
        where: str = "",
        data_id: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[DatasetRef]:
        return self.registry.query_datasets(dataset_type, collections, where, data_id, **kwargs)

    # -- removing ---------------------------------------------------------------------
    def remove(self, refs: Iterable[DatasetRef]) -> int:
        """Unregister datasets, then delete their files (shared raw files: when unused)."""
        refs = list(refs)
        removed = self.registry.remove_datasets(refs)
        for uri in {r.uri for r in refs if r.uri}:
            self._delete_file_if_unreferenced(uri)
        return removed

    def _delete_file_if_unreferenced(self, uri: str) -> None:
        if self.registry.count_datasets_with_uri(uri) == 0:
            self.datastore.remove(uri)

    def orphans(self) -> list[str]:
        """Files in the datastore that no registered dataset refers to."""
        return self.datastore.orphans(self.registry.known_uris())

    # -- spatial queries --------------------------------------------------------------
    def patches_overlapping(self, region: Any, *, skymap: str | None = None) -> list[Any]:
        """Patches overlapping a sphgeom region or a ``(Box, WCS)`` footprint (exact)."""
        return self.registry.patches_overlapping(_as_region(region), skymap=skymap)

    def visit_detectors_overlapping(self, region: Any, *, instrument: str | None = None) -> list[Any]:
        return self.registry.visit_detectors_overlapping(_as_region(region), instrument=instrument)


def _as_region(region: Any) -> Any:
    """A sphgeom region from a region or a ``(Box, WCS)`` pair (the box's pixel edges)."""
    if isinstance(region, tuple) and len(region) == 2:
        from coadd_core.skymap import sky_polygon_from_box

        box, wcs = region
        return sky_polygon_from_box(box, wcs)
    return region


def new_run_name(prefix: str) -> str:
    """A fresh RUN name under ``prefix`` (e.g. for ad-hoc runs): ``prefix/<time-ordered id>``."""
    from registry.refs import uuid7

    return f"{prefix}/{uuid7().hex[:16]}"


__all__ = [
    "Butler",
    "ButlerError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "RepoConfig",
    "new_run_name",
]
