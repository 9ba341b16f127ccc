"""Scale-out on Ray: compress a dataset across an actor pool (Ray Data) and serve the engine with Ray Serve.

Needs the ``ray`` extra (``pip install "cprs-integrations[ray]"``). A thin layer over the engine and the server app:
the engine knows nothing of Ray.

* :func:`compress_dataset`: a ``map_batches`` stage over an actor pool, one engine per actor (:mod:`.data`; the
  per-batch work is :class:`~cprs_integrations.ray.batch.CompressBatch`); ``cprs compress-dataset`` runs it over
  Parquet / JSONL files (:mod:`.files`).
* :func:`build_app`: the app of ``cprs serve`` mounted in a Ray Serve deployment, one engine per replica
  (:mod:`.serve`).

Examples:
    >>> import ray
    >>> from cprs_integrations.ray import compress_dataset
    >>> ds = ray.data.read_parquet("s3://bucket/docs/")  # doctest: +SKIP
    >>> out = compress_dataset(ds, query_column="question", text_column="context", concurrency=4)  # doctest: +SKIP
    >>> out.write_parquet("s3://bucket/compressed/")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["build_app", "compress_dataset"]

_LAZY = {
    "compress_dataset": "cprs_integrations.ray.data",
    "build_app": "cprs_integrations.ray.serve",
}

if TYPE_CHECKING:
    from cprs_integrations.ray.data import compress_dataset
    from cprs_integrations.ray.serve import build_app


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cprs_integrations.ray' has no attribute {name!r}")
