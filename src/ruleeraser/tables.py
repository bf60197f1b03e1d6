"""Read and write the command line's tables (CSV or Parquet), whole or in chunks.

A file that cannot be what its suffix says (a Parquet file named ``.csv``, an empty file, a
directory), that does not parse, or that holds no rows raises :class:`TableFileError`, a
``ValueError`` whose message names the file.

Example
-------
>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "rows.parquet"
>>> with TableWriter(path) as writer:
...     writer.write(pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]}))
...     writer.write(pd.DataFrame({"x": [3.0], "y": [1]}))
>>> table_columns(path), count_rows(path)
(['x', 'y'], 3)
>>> [len(chunk) for chunk in iter_table(path, ["y", "x"], chunk_rows=2)]
[2, 1]
>>> read_table(path, ["y"])["y"].tolist()
[0, 1, 1]
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_NAMES = {"csv": "CSV", "parquet": "Parquet"}


class TableFileError(ValueError):
    """A table file that cannot be read as its suffix says, or holds no rows: the message
    names the file and what is wrong."""


def table_format(path: str | Path) -> str:
    """``"csv"`` or ``"parquet"``, from the file's suffix.

    >>> table_format("rows.parquet"), table_format("rows.CSV")
    ('parquet', 'csv')
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: expected a .csv or .parquet file")
    return FORMATS[suffix]


def check_table_file(path: str | Path) -> str:
    """The format of the table at ``path``, after checking that it is a file of that format.

    Raises ``FileNotFoundError``, or :class:`TableFileError` for a directory, an empty file,
    or a file whose first bytes say it is the other format (a Parquet file named ``.csv``).

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "rows.csv"
    >>> _ = path.write_bytes(b"PAR1...")
    >>> check_table_file(path)
    Traceback (most recent call last):
    ...
    ruleeraser.tables.TableFileError: .../rows.csv is a Parquet file, not CSV: rename it .parquet
    """
    kind = table_format(path)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no table file {path}")
    if path.is_dir():
        raise TableFileError(f"{path} is a directory, not a {_NAMES[kind]} file")
    with path.open("rb") as file:
        head = file.read(4)
    if not head:
        raise TableFileError(f"{path} is empty")
    if kind == "csv" and head == b"PAR1":
        raise TableFileError(f"{path} is a Parquet file, not CSV: rename it .parquet")
    if kind == "parquet" and head != b"PAR1":
        looks = " (it looks like text: a CSV file? rename it .csv)" if head.isascii() else ""
        raise TableFileError(f"{path} is not a Parquet file{looks}")
    return kind


@contextmanager
def _reading(path: str | Path) -> Iterator[None]:
    """Name the file in the errors of pandas' and pyarrow's readers (a row that does not
    parse, bytes that are not UTF-8, a damaged Parquet footer)."""
    import pyarrow as pa

    try:
        yield
    except (ValueError, pa.ArrowException) as exc:
        if isinstance(exc, TableFileError):
            raise
        problem = " ".join(str(exc).split())[:300]
        hint = " (save it as UTF-8)" if isinstance(exc, UnicodeDecodeError) else ""
        raise TableFileError(f"{path}: cannot read it ({problem}){hint}") from None


def table_columns(path: str | Path) -> list[str]:
    """The column names of the table file at ``path`` (its header; no rows are read)."""
    kind = check_table_file(path)
    with _reading(path):
        if kind == "csv":
            return [str(c) for c in pd.read_csv(path, nrows=0).columns]
        import pyarrow.parquet as pq

        return [str(c) for c in pq.read_schema(path).names]


def count_rows(path: str | Path) -> int | None:
    """The number of rows of a Parquet file (from its metadata); None for CSV."""
    if check_table_file(path) == "csv":
        return None
    import pyarrow.parquet as pq

    with _reading(path):
        return pq.ParquetFile(path).metadata.num_rows


def require_columns(path: str | Path, wanted: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the columns of ``wanted`` that the table at ``path`` lacks,
    and listing those it has."""
    available = table_columns(path)
    missing = [c for c in dict.fromkeys(wanted) if c not in available]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; its columns: {available}")


def read_table(path: str | Path, columns: Sequence[str]) -> pd.DataFrame:
    """Columns ``columns`` of a table file, in that order; :class:`TableFileError` when it
    has no rows."""
    columns = list(dict.fromkeys(columns))
    require_columns(path, columns)
    with _reading(path):
        if table_format(path) == "csv":
            frame = pd.read_csv(path)  # every column: usecols would drop a row's extra fields
        else:
            frame = pd.read_parquet(path, columns=columns)
    if frame.empty:
        raise TableFileError(f"{path} has no rows, only its header")
    return frame[columns]


def iter_table(path: str | Path, columns: Sequence[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Columns ``columns`` of a table file, ``chunk_rows`` rows at a time, in that order.

    CSV is read with ``pandas.read_csv(chunksize=...)``, Parquet batch by batch with
    ``pyarrow``: memory stays bounded by the chunk, whatever the file's length. A table
    without rows raises :class:`TableFileError`.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    columns = list(dict.fromkeys(columns))
    require_columns(path, columns)
    rows = 0
    for chunk in _chunks(path, columns, chunk_rows):
        if len(chunk):  # a header-only CSV reads as one empty chunk
            rows += len(chunk)
            yield chunk
    if rows == 0:
        raise TableFileError(f"{path} has no rows, only its header")


def _chunks(path: str | Path, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    with _reading(path):
        if table_format(path) == "csv":
            # every column: with usecols, pandas drops a row's fields beyond the header's
            # without a word; read whole, such a row is an error naming its line
            with pd.read_csv(path, chunksize=chunk_rows) as reader:
                for chunk in reader:
                    yield chunk[columns]
            return
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as file:
            for batch in file.iter_batches(batch_size=chunk_rows, columns=columns):
                yield batch.to_pandas()[columns]


class TableWriter:
    """Write a table chunk by chunk (CSV appended, Parquet through a ``ParquetWriter``).

    Chunks go to ``<path>.partial``, renamed to ``path`` by :meth:`close`; a run that fails
    leaves no file that could pass for complete output. Used as a context manager, it closes
    on success and aborts on an error (see the module's example).

    Parameters
    ----------
    path: the ``.csv`` or ``.parquet`` file to write.

    Attributes
    ----------
    rows: rows written so far.
    partial: the file written until :meth:`close`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.format = table_format(self.path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._csv: Any = None
        self._parquet: Any = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        """Append the rows of ``frame`` (the same columns every time)."""
        if self.format == "csv":
            if self._csv is None:
                self._csv = self.partial.open("w", newline="")
                frame.to_csv(self._csv, index=False)
            else:
                frame.to_csv(self._csv, index=False, header=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            if self._parquet is None:
                table = pa.Table.from_pandas(frame, preserve_index=False)
                self._parquet = pq.ParquetWriter(self.partial, table.schema)
            else:
                table = pa.Table.from_pandas(
                    frame, schema=self._parquet.schema, preserve_index=False
                )
            self._parquet.write_table(table)
        self.rows += len(frame)

    def close(self) -> Path:
        """Finish the file and move it into place."""
        self._finish()
        if self.rows == 0:
            raise ValueError(f"no rows to write to {self.path}")
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Stop and remove the partial file."""
        self._finish()
        self.partial.unlink(missing_ok=True)

    def _finish(self) -> None:
        if self._csv is not None:
            self._csv.close()
        if self._parquet is not None:
            self._parquet.close()
        self._csv = self._parquet = None

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def check_features(frame: pd.DataFrame, first_row: int = 0) -> None:
    """Raise ``ValueError`` for non-numeric feature columns or rows with missing values.

    ``first_row``: the row number of ``frame``'s first row in its file, for the message.

    >>> check_features(pd.DataFrame({"x": [1.0, None]}), first_row=10)
    Traceback (most recent call last):
    ...
    ValueError: 1 row(s) with missing or infinite feature values (data rows from 0): 11
    """
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise ValueError(
            f"feature column(s) {bad} are not numeric "
            f"({', '.join(str(frame[c].dtype) for c in bad)}); encode them first"
        )
    values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    _fail_rows(~np.isfinite(values).all(axis=1), "missing or infinite feature values", first_row)


def check_labels(column: pd.Series, first_row: int = 0) -> None:
    """Raise ``ValueError`` naming the rows of ``column`` without a value.

    >>> check_labels(pd.Series([0, None, 1], name="sex"))
    Traceback (most recent call last):
    ...
    ValueError: 1 row(s) with no 'sex' value (data rows from 0): 1
    """
    _fail_rows(column.isna().to_numpy(), f"no {column.name!r} value", first_row)


def _fail_rows(bad: np.ndarray, what: str, first_row: int) -> None:
    if bad.any():
        rows = np.flatnonzero(bad) + first_row
        shown = ", ".join(map(str, rows[:10])) + (" ..." if rows.size > 10 else "")
        raise ValueError(f"{rows.size} row(s) with {what} (data rows from 0): {shown}")
