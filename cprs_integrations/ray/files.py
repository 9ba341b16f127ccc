"""compress_files: ``cprs compress-dataset``'s work: read Parquet or JSON-lines files, run
:func:`~cprs_integrations.ray.data.compress_dataset`, write the rows with the output columns, and count what came
out.

The output is a folder of files, one or more per block, written in parallel by Ray (Ray Data's layout; the file
names sort in row order, since row order is kept). JSON lines keep non-ASCII characters as they are, and span
scores to 15 significant digits.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cprs_integrations.ray._deps import missing
from cprs_integrations.ray.batch import OutputColumns
from cprs_integrations.ray.data import compress_dataset

try:
    import ray.data
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing(e) from e

Format = Literal["parquet", "jsonl"]
FORMATS: tuple[str, ...] = ("parquet", "jsonl")
_SUFFIXES: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}
_COMPRESSIONS = (".gz", ".br", ".zst", ".lz4")


@dataclass(frozen=True)
class Summary:
    """What a run wrote.

    Attributes:
        rows: Rows written.
        errors: Rows with an error (see the ``*_error`` column).
        original_tokens: Tokens of the input texts (rows without error).
        compressed_tokens: Tokens of the compressed texts.
        seconds: Wall time of the run (reading, compressing, writing; not the count).
    """

    rows: int
    errors: int
    original_tokens: int
    compressed_tokens: int
    seconds: float

    def __str__(self) -> str:
        ratio = self.original_tokens / self.compressed_tokens if self.compressed_tokens else float("inf")
        return (
            f"{self.rows:,} rows ({self.errors:,} with an error), {self.original_tokens:,} -> "
            f"{self.compressed_tokens:,} tokens ({ratio:.1f}x), {self.seconds:.1f} s"
        )


def file_format(path: str | os.PathLike[str], given: str | None = None) -> Format:
    """``given``, else the format of ``path`` from its suffix (a folder: from the files inside).

    Raises:
        ValueError: unknown format, or none could be told.
    """
    if given is not None:
        if given not in FORMATS:
            raise ValueError(f"unknown format {given!r}: use one of {list(FORMATS)}")
        return given  # type: ignore[return-value]
    path = Path(path)
    names = [p.name for p in path.iterdir() if p.is_file()] if path.is_dir() else [path.name]
    found = {_format_of(name) for name in names} - {None}
    if len(found) != 1:
        what = "no Parquet or JSON-lines files" if not found else f"files of several formats {sorted(found)}"  # type: ignore[type-var]
        raise ValueError(f"{os.fspath(path)} holds {what}; pass --input-format / --output-format")
    return found.pop()  # type: ignore[return-value]


def _format_of(name: str) -> Format | None:
    stem = name.lower()
    for compression in _COMPRESSIONS:
        stem = stem.removesuffix(compression)
    return _SUFFIXES.get(Path(stem).suffix)


def read(path: str | os.PathLike[str], kind: Format) -> ray.data.Dataset:
    """A lazy dataset over a file or a folder of files.

    Raises:
        FileNotFoundError: ``path`` does not exist (a local path).
    """
    if "://" not in os.fspath(path) and not Path(path).exists():
        raise FileNotFoundError(f"{os.fspath(path)}: no such file or folder")
    if kind == "parquet":
        return ray.data.read_parquet(os.fspath(path))
    return ray.data.read_json(os.fspath(path), lines=True)


def write(ds: ray.data.Dataset, path: str | os.PathLike[str], kind: Format) -> None:
    """Write (runs the whole pipeline)."""
    if kind == "parquet":
        ds.write_parquet(os.fspath(path))
    else:
        ds.write_json(os.fspath(path), pandas_json_args_fn=_json_args)


def _json_args() -> dict[str, Any]:
    return {"force_ascii": False, "double_precision": 15}


def compress_files(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    input_format: str | None = None,
    output_format: str | None = None,
    output_column: str = "compressed",
    **stage: Any,
) -> Summary:
    """Compress the rows of ``source`` into the folder ``target`` and count what was written.

    Args:
        source: A Parquet or JSON-lines file, or a folder of them (local or a URL Ray reads, e.g. ``s3://``).
        target: Output folder (created; files are added to it).
        input_format: ``parquet`` or ``jsonl``; default from ``source``'s suffix.
        output_format: Default: ``input_format``.
        output_column: As in :func:`compress_dataset`.
        **stage: The other :func:`compress_dataset` arguments.

    Returns:
        The count, read back from the written files' output columns.

    Raises:
        ValueError: unknown format, bad arguments (from :func:`compress_dataset`).
        FileNotFoundError: ``source`` does not exist.
    """
    started = time.perf_counter()
    kind_in = file_format(source, input_format)
    kind_out = file_format(target, output_format or kind_in)
    columns = OutputColumns.named(output_column)
    options = ray.data.DataContext.get_current().execution_options
    kept = options.preserve_order
    options.preserve_order = True  # the files keep the input's row order
    try:
        write(compress_dataset(read(source, kind_in), output_column=output_column, **stage), target, kind_out)
    finally:
        options.preserve_order = kept
    seconds = time.perf_counter() - started
    return _count(read(target, kind_out), columns, seconds)


def _count(ds: ray.data.Dataset, columns: OutputColumns, seconds: float) -> Summary:
    """Counts from the written files, read back as Python values (Ray reads JSON lines through pandas: a missing
    value may come back as NaN, and token counts as floats)."""
    rows = errors = original = compressed = 0
    wanted = [columns.error, columns.original_tokens, columns.compressed_tokens]
    for batch in ds.select_columns(wanted).iter_batches(batch_format="pyarrow", batch_size=4096):
        rows += batch.num_rows
        errors += sum(_present(e) for e in batch.column(columns.error).to_pylist())
        original += int(sum(n for n in batch.column(columns.original_tokens).to_pylist() if _present(n)))
        compressed += int(sum(n for n in batch.column(columns.compressed_tokens).to_pylist() if _present(n)))
    return Summary(rows, errors, original, compressed, seconds)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
