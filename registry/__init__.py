"""The butler: SQLAlchemy registry, fsspec datastore, formatters and raw ingest."""
