"""compress_dataset: compress every row of a Ray Dataset for its query, on a pool of actors (one engine each).

A class-based ``map_batches`` stage: Ray streams blocks through an :class:`~ray.data.ActorPoolStrategy` pool of
:class:`~cprs_integrations.ray.batch.CompressBatch` actors; each loads the critic once and keeps it for every
batch it is given. Row rules (per-row budgets, empty texts, the error column): :mod:`cprs_integrations.ray.batch`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cprs_integrations.engine.inputs import check_query
from cprs_integrations.ray._actors import engine_kwargs_for, positive_int, runtime_env_for, torch_threads_for
from cprs_integrations.ray._deps import missing
from cprs_integrations.ray.batch import CompressBatch, OutputColumns, row_options

try:
    import ray.data
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing(e) from e

if TYPE_CHECKING:
    from cprs_integrations.engine.options import CompressionOptions

#: Rows per ``map_batches`` call by default: enough windows to fill the critic's forward passes even when every
#: row has its own query (each row is then one engine call; the calls run concurrently on the engine).
DEFAULT_BATCH_SIZE = 64


def compress_dataset(
    ds: ray.data.Dataset,
    *,
    query_column: str = "query",
    text_column: str = "text",
    output_column: str = "compressed",
    query: str | None = None,
    options: CompressionOptions | None = None,
    model: str | os.PathLike[str] | None = None,
    engine_kwargs: Mapping[str, Any] | None = None,
    concurrency: int | tuple[int, int] = 1,
    num_gpus: float = 0,
    num_cpus: float = 1,
    torch_threads: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    runtime_env: Mapping[str, Any] | None = None,
) -> ray.data.Dataset:
    """The dataset with each row's text compressed for its query (lazy, streaming: nothing runs until consumed).

    Every row stays, in place, with every column unchanged; these are appended (names from ``output_column``,
    :class:`~cprs_integrations.ray.batch.OutputColumns`): ``compressed`` (text), ``compressed_spans``
    (``[{start, end, score}]``, character offsets into the input text), ``compressed_original_tokens``,
    ``compressed_tokens`` and ``compressed_error`` (``None`` when the row was compressed; else why not, and the
    other four are ``None``). Empty texts give ``""`` with no spans. Budgets are per row, so results never depend
    on how Ray splits rows into batches.

    Args:
        ds: The dataset.
        query_column: Column holding each row's query.
        text_column: Column holding the text to compress.
        output_column: Name of the compressed-text column (the others are derived from it).
        query: One query for every row (then ``query_column`` is not read).
        options: :class:`~cprs_integrations.engine.options.CompressionOptions` (default: sentences,
            ``target_ratio=0.2``); ``per_text_budget`` is set for you.
        model: Critic folder or hub id, loaded by each actor; ``None``: the embedded default critic.
        engine_kwargs: More :meth:`CPRSEngine.from_pretrained` arguments (``dtype``, ``batch_size``,
            ``window_tokens``, ``max_input_tokens``, ...). ``device`` defaults to ``"cuda"`` when ``num_gpus`` > 0
            (the GPU Ray gives the actor), else ``"cpu"``.
        concurrency: Actors: a number, or ``(min, max)`` for an autoscaling pool.
        num_gpus: GPUs per actor (``0.5``: two actors share a GPU).
        num_cpus: CPUs Ray reserves per actor.
        torch_threads: torch threads per actor; default ``num_cpus`` (rounded up), so that actors on one machine
            do not oversubscribe its cores.
        batch_size: Rows per ``map_batches`` call (Ray's batch), not the critic's windows per forward pass
            (``engine_kwargs={"batch_size": ...}``).
        runtime_env: Ray runtime environment of the actors (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=4`` is added unless
            set: bounded CPU memory over a long job).

    Returns:
        The lazy output dataset. Row order across blocks is Ray Data's: keep it with
        ``ray.data.DataContext.get_current().execution_options.preserve_order = True``.

    Raises:
        ValueError: an invalid argument, an output column that exists already, a missing query / text column
            (checked here when the schema is known before running, else by the first batch).

    Examples:
        >>> out = compress_dataset(ds, query="What changed in 2024?", options=CompressionOptions(target_tokens=300),
        ...                        model="Tongyi-Zhiwen/QwenLong-CPRS-7B", concurrency=8, num_gpus=1)  # doctest: +SKIP
        >>> out.filter(lambda row: row["compressed_error"] is not None).count()  # doctest: +SKIP
    """
    columns = OutputColumns.named(output_column)
    if query is not None:
        check_query(query)
    row_options(options)  # checked here, before any actor starts
    batch_size = positive_int("batch_size", batch_size)
    if not num_gpus >= 0 or not num_cpus >= 0:
        raise ValueError(f"num_gpus and num_cpus must be >= 0, got {num_gpus!r} and {num_cpus!r}")
    _check_schema(ds, columns, [text_column] if query is not None else [query_column, text_column])
    threads = torch_threads_for(torch_threads, num_cpus)
    return ds.map_batches(
        CompressBatch,
        batch_size=batch_size,
        batch_format="pyarrow",
        zero_copy_batch=True,
        compute=_pool(concurrency),
        fn_constructor_kwargs={
            "model": None if model is None else os.fspath(model),
            "query_column": query_column,
            "text_column": text_column,
            "output_column": output_column,
            "query": query,
            "options": options,
            "engine_kwargs": engine_kwargs_for(engine_kwargs, num_gpus),
            "torch_threads": threads,
        },
        num_gpus=num_gpus,
        num_cpus=num_cpus,
        runtime_env=runtime_env_for(runtime_env),
        udf_modifying_row_count=False,
    )


def _pool(concurrency: int | tuple[int, int]) -> ray.data.ActorPoolStrategy:
    if isinstance(concurrency, tuple):
        if len(concurrency) != 2:
            raise ValueError(f"concurrency must be a number of actors or (min, max), got {concurrency!r}")
        low, high = (positive_int("concurrency", c) for c in concurrency)
        if low > high:
            raise ValueError(f"concurrency (min, max) needs min <= max, got {concurrency!r}")
        return ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    return ray.data.ActorPoolStrategy(size=positive_int("concurrency", concurrency))


def _check_schema(ds: ray.data.Dataset, columns: OutputColumns, needed: list[str]) -> None:
    """Fail before running when the schema is already known (a Parquet file, in-memory data); otherwise the
    first batch checks the same."""
    schema = ds.schema(fetch_if_missing=False)
    if schema is None:
        return
    names = list(schema.names)
    columns.check_free(names)
    absent = [name for name in needed if name not in names]
    if absent:
        raise ValueError(f"the dataset has no column(s) {absent}; its columns are {names}")
