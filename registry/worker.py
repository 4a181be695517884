"""The butler as pixel tasks see it: read files by reference, write files, no database.

Workers (process pools, Dask workers) never open the registry: the flow resolves every
input to a :class:`~registry.refs.DatasetRef` with its URI before submitting a task, and
registers the refs the task returns. A :class:`WorkerButler` is therefore small and
picklable (a datastore root and its options), and needs no database credentials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from registry.dataset_types import FILE_TEMPLATES
from registry.datastore import FileDatastore
from registry.formatters import formatter_for
from registry.refs import DatasetRef, DatasetType


@dataclass(frozen=True)
class WorkerButler:
    """Datastore-only access for tasks: ``get(ref)`` and ``write(obj, type, data_id, run)``."""

    datastore_url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_butler(cls, butler: Any) -> "WorkerButler":
        return cls(butler.config.datastore_url, dict(butler.datastore.storage_options))

    @property
    def datastore(self) -> FileDatastore:
        store = self.__dict__.get("_datastore")
        if store is None:
            store = FileDatastore(self.datastore_url, storage_options=self.storage_options, templates=FILE_TEMPLATES)
            object.__setattr__(self, "_datastore", store)
        return store

    def __getstate__(self) -> dict[str, Any]:
        return {"datastore_url": self.datastore_url, "storage_options": self.storage_options}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        object.__setattr__(self, "datastore_url", state["datastore_url"])
        object.__setattr__(self, "storage_options", dict(state["storage_options"]))

    def get(self, ref: DatasetRef, storage_class: str, **parameters: Any) -> Any:
        """Read the dataset ``ref`` points to (``bbox=`` for exposure sections)."""
        if ref.uri is None:
            raise ValueError(f"{ref} has no file URI; resolve it through the registry first")
        if storage_class == "RawImage" and "detector_name" not in parameters:
            parameters["detector_name"] = f"ccd{int(ref.data_id['detector']):02d}"
        return formatter_for(storage_class).read(
            self.datastore.local_path_or_url(ref.uri), storage_options=self.storage_options, **parameters
        )

    def write(
        self, obj: Any, dataset_type: DatasetType, data_id: Mapping[str, Any], run: str, *, unique_name: bool = False
    ) -> DatasetRef:
        """Write ``obj``'s file atomically and return its unregistered ref (with URI, size, checksum)."""
        ref = DatasetRef.new(dataset_type, data_id, run)
        formatter = formatter_for(dataset_type.storage_class)
        relative = self.datastore.relative_path(dataset_type.name, run, ref.data_id, formatter.extension)
        if unique_name:
            stem, ext = os.path.splitext(relative)
            relative = f"{stem}_{ref.id.hex[:12]}{ext}"
        stored = self.datastore.write(relative, lambda tmp: formatter.write(obj, tmp), overwrite=True)
        return ref.with_file(stored.uri, stored.size, stored.checksum)
