"""CompressBatch: the callable class Ray Data runs in each actor of the pool (one engine per actor, loaded once).

A batch is an Arrow table; the same table comes back, every row in place and every column untouched, with the
compression columns appended (:class:`OutputColumns`). Nothing here imports Ray: the class is plain Python (and
pyarrow), so it also runs in-process.

Rules, per row:

* Budgets are per row (``per_text_budget=True`` in budget mode), so a row's result never depends on which rows
  Ray puts in the same batch. Rows of one query are still compressed in one engine call (their windows share
  forward passes), and the calls of different queries run concurrently on the engine, whose scheduler batches
  their windows together.
* An empty or whitespace-only text gives an empty result in place (``""``, no spans, 0 tokens), as the engine does.
* A bad row gives a message in the error column and nulls in the result columns; the other rows are compressed.
  Bad means what the engine refuses as input (``ValueError`` / ``TypeError``): a null or non-string text, a null,
  non-string or blank query, a text above the engine's ``max_input_tokens``. Anything else (a broken critic, a CUDA
  error) is not about the row: it fails the batch, and Ray retries or fails the job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from cprs_integrations.engine.inputs import check_query, check_texts
from cprs_integrations.engine.options import CompressionOptions
from cprs_integrations.engine.result import CompressionResult

if TYPE_CHECKING:
    import pyarrow as pa

    from cprs_integrations.engine.engine import CPRSEngine

#: Most engine calls (one per distinct query of a batch) in flight at once per actor; their windows share forward
#: passes on the engine's scheduler, so a batch of rows with one query each still fills the critic's batches.
MAX_CONCURRENT_CALLS = 32

#: One row's outcome: its result, or the message of why the row was refused.
RowOutcome = CompressionResult | str


@dataclass(frozen=True)
class OutputColumns:
    """Names of the columns the stage appends, all derived from ``output_column``.

    Attributes:
        text: The compressed text (string; null on a bad row).
        spans: The kept slices of the input text, ``[{start, end, score}, ...]`` in character offsets (list of
            structs; null on a bad row).
        original_tokens: Tokens of the input text under the options' token counter (int64; null on a bad row).
        compressed_tokens: Tokens of the compressed text (int64; null on a bad row).
        error: Why the row was not compressed (string), null when it was.
    """

    text: str
    spans: str
    original_tokens: str
    compressed_tokens: str
    error: str

    @classmethod
    def named(cls, output_column: str) -> OutputColumns:
        """``output_column``, ``{output_column}_spans``, ``_original_tokens``, ``_tokens`` and ``_error``.

        Raises:
            ValueError: ``output_column`` is not a non-empty string.
        """
        if not isinstance(output_column, str) or not output_column.strip():
            raise ValueError(f"output_column must be a non-empty string, got {output_column!r}")
        return cls(
            text=output_column,
            spans=f"{output_column}_spans",
            original_tokens=f"{output_column}_original_tokens",
            compressed_tokens=f"{output_column}_tokens",
            error=f"{output_column}_error",
        )

    @property
    def names(self) -> tuple[str, ...]:
        return (self.text, self.spans, self.original_tokens, self.compressed_tokens, self.error)

    def check_free(self, existing: Sequence[str]) -> None:
        """Refuse to overwrite a column of the input.

        Raises:
            ValueError: an output column already exists.
        """
        taken = [name for name in self.names if name in existing]
        if taken:
            raise ValueError(
                f"the dataset already has column(s) {taken}: pass another output_column (the stage never "
                "overwrites a column)"
            )


def row_options(options: CompressionOptions | None) -> CompressionOptions:
    """The options every row is compressed with: ``options`` with one budget per text (budget mode; tags mode has
    no budget, so each text is already on its own)."""
    options = options if options is not None else CompressionOptions()
    if not isinstance(options, CompressionOptions):
        raise TypeError(f"options must be a CompressionOptions, got {type(options).__name__}")
    return options.merged(per_text_budget=True) if options.mode == "budget" else options


def row_problem(query: Any, text: Any, query_column: str, text_column: str) -> str | None:
    """Why a row cannot be compressed (what the engine would refuse), or ``None``."""
    if text is None:
        return f"ValueError: {text_column} is null"
    if query is None:
        return f"ValueError: {query_column} is null"
    try:
        check_texts([text])
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {text_column}{str(e).removeprefix('texts[0]')}"
    try:
        check_query(query)
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {query_column}{str(e).removeprefix('query')}"
    return None


def compress_rows(
    engine: CPRSEngine,
    queries: Sequence[Any],
    texts: Sequence[Any],
    options: CompressionOptions,
    *,
    query_column: str = "query",
    text_column: str = "text",
    pool: ThreadPoolExecutor | None = None,
) -> list[RowOutcome]:
    """One outcome per row, in row order: rows grouped by query, one engine call per query.

    Args:
        engine: The engine.
        queries: The query of each row.
        texts: The text of each row.
        options: Options with per-text budgets (:func:`row_options`).
        query_column: Name of the query column (for messages).
        text_column: Name of the text column (for messages).
        pool: Runs the calls of different queries concurrently; ``None``: one after another.

    Raises:
        Exception: whatever the engine raises that is not about a row's input (module docstring).
    """
    outcomes: list[RowOutcome | None] = [None] * len(texts)
    groups: dict[str, list[int]] = {}
    for i, (query, text) in enumerate(zip(queries, texts)):
        problem = row_problem(query, text, query_column, text_column)
        if problem is not None:
            outcomes[i] = problem
        else:
            groups.setdefault(query, []).append(i)

    def run(query: str, rows: list[int]) -> None:
        for i, outcome in zip(rows, _compress_group(engine, query, [texts[i] for i in rows], options)):
            outcomes[i] = outcome

    if pool is None or len(groups) < 2:
        for query, rows in groups.items():
            run(query, rows)
    else:
        for future in [pool.submit(run, query, rows) for query, rows in groups.items()]:
            future.result()  # re-raises what is not about a row
    return cast("list[RowOutcome]", outcomes)  # every row has its outcome now


def _compress_group(engine: CPRSEngine, query: str, texts: list[str], options: CompressionOptions) -> list[RowOutcome]:
    """The texts of one query in one call; when the engine refuses the call's input, each text alone, so that only
    the row it refuses gets the error."""
    try:
        return list(engine.compress(query, texts, options, show_progress=False))
    except (TypeError, ValueError) as e:
        if len(texts) == 1:
            return [f"{type(e).__name__}: {e}"]
    return [_alone(engine, query, text, options) for text in texts]


def _alone(engine: CPRSEngine, query: str, text: str, options: CompressionOptions) -> RowOutcome:
    try:
        [result] = engine.compress(query, [text], options, show_progress=False)
    except (TypeError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return result


def span_type() -> pa.DataType:
    """Arrow type of the spans column: ``list<struct<start: int64, end: int64, score: double>>``."""
    import pyarrow as pa

    return pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())]))


def append_outcomes(table: pa.Table, outcomes: Sequence[RowOutcome], columns: OutputColumns) -> pa.Table:
    """``table`` with the output columns appended (typed explicitly, so that every block has the same schema)."""
    import pyarrow as pa

    results = [o if isinstance(o, CompressionResult) else None for o in outcomes]
    values: dict[str, tuple[list[Any], pa.DataType]] = {
        columns.text: ([r.text if r else None for r in results], pa.string()),
        columns.spans: (
            [[{"start": s.start, "end": s.end, "score": s.score} for s in r.spans] if r else None for r in results],
            span_type(),
        ),
        columns.original_tokens: ([r.original_tokens if r else None for r in results], pa.int64()),
        columns.compressed_tokens: ([r.compressed_tokens if r else None for r in results], pa.int64()),
        columns.error: ([o if isinstance(o, str) else None for o in outcomes], pa.string()),
    }
    for name, (column, kind) in values.items():
        table = table.append_column(pa.field(name, kind), pa.array(column, type=kind))
    return table


class CompressBatch:
    """Compress the rows of an Arrow batch: what each actor of :func:`~cprs_integrations.ray.compress_dataset`
    holds. The engine loads once, in the constructor.

    Args:
        model: Critic folder or hub id; ``None``: the embedded default.
        query_column: Column holding each row's query (unused when ``query`` is given).
        text_column: Column holding the text to compress.
        output_column: Name of the compressed-text column; the others derive from it (:class:`OutputColumns`).
        query: One query for every row, instead of ``query_column``.
        options: Compression options (budgets become per row).
        engine_kwargs: Passed to :meth:`CPRSEngine.from_pretrained` (``device``, ``dtype``, ``batch_size``, ...).
        torch_threads: ``torch.set_num_threads`` of this process before loading; ``None``: leave it.
        engine: A built engine instead of ``model`` / ``engine_kwargs`` (in-process use and tests).

    Raises:
        ValueError: bad column names or options.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        query_column: str = "query",
        text_column: str = "text",
        output_column: str = "compressed",
        query: str | None = None,
        options: CompressionOptions | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
        torch_threads: int | None = None,
        engine: CPRSEngine | None = None,
    ):
        self.columns = OutputColumns.named(output_column)
        self.query_column, self.text_column = query_column, text_column
        self.query = None if query is None else check_query(query)
        self.options = row_options(options)
        if engine is None:
            if torch_threads is not None:
                import torch

                torch.set_num_threads(torch_threads)
            from cprs_integrations.engine.engine import CPRSEngine

            engine = CPRSEngine.from_pretrained(model, **dict(engine_kwargs or {}))
        self.engine = engine
        self._pool = ThreadPoolExecutor(
            max_workers=min(MAX_CONCURRENT_CALLS, max(2, engine.batch_size)), thread_name_prefix="cprs-rows"
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        """The batch with the output columns appended; rows, their order and the other columns unchanged.

        Raises:
            ValueError: the query or text column is missing, or an output column already exists.
        """
        names = batch.column_names
        self.columns.check_free(names)
        needed = [self.text_column] if self.query is not None else [self.query_column, self.text_column]
        missing = [name for name in needed if name not in names]
        if missing:
            raise ValueError(f"the dataset has no column(s) {missing}; its columns are {names}")
        texts = batch.column(self.text_column).to_pylist()
        queries = [self.query] * len(texts) if self.query is not None else batch.column(self.query_column).to_pylist()
        outcomes = compress_rows(
            self.engine,
            queries,
            texts,
            self.options,
            query_column=self.query_column,
            text_column=self.text_column,
            pool=self._pool,
        )
        return append_outcomes(batch, outcomes, self.columns)
