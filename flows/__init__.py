"""Prefect flows and the ``coadd`` command line: glue between the butler and ``coadd_core``."""
