"""Read and write the command line's tables (CSV or Parquet), whole or in chunks."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def table_format(path: str | Path) -> str:
    """``"csv"`` or ``"parquet"``, from the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: expected a .csv or .parquet file")
    return FORMATS[suffix]


def table_columns(path: str | Path) -> list[str]:
    """The column names of a table file."""
    if table_format(path) == "csv":
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    import pyarrow.parquet as pq

    return [str(c) for c in pq.read_schema(path).names]


def count_rows(path: str | Path) -> int | None:
    """The number of rows of a Parquet file (from its metadata); None for CSV."""
    if table_format(path) == "csv":
        return None
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def require_columns(path: str | Path, wanted: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the columns of ``wanted`` that the table lacks."""
    available = table_columns(path)
    missing = [c for c in dict.fromkeys(wanted) if c not in available]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; its columns: {available}")


def read_table(path: str | Path, columns: Sequence[str]) -> pd.DataFrame:
    """Columns ``columns`` of a table file, in that order."""
    columns = list(dict.fromkeys(columns))
    require_columns(path, columns)
    if table_format(path) == "csv":
        frame = pd.read_csv(path, usecols=columns)
    else:
        frame = pd.read_parquet(path, columns=columns)
    return frame[columns]


def iter_table(path: str | Path, columns: Sequence[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Columns ``columns`` of a table file, ``chunk_rows`` rows at a time, in that order.

    CSV is read with ``pandas.read_csv(chunksize=...)``, Parquet batch by batch with
    ``pyarrow``: memory stays bounded by the chunk, whatever the file's length.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    columns = list(dict.fromkeys(columns))
    require_columns(path, columns)
    if table_format(path) == "csv":
        with pd.read_csv(path, usecols=columns, chunksize=chunk_rows) as reader:
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
    leaves no file that could pass for complete output.
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
    """Raise ``ValueError`` for non-numeric feature columns or rows with missing values."""
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise ValueError(
            f"feature column(s) {bad} are not numeric "
            f"({', '.join(str(frame[c].dtype) for c in bad)}); encode them first"
        )
    values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    _fail_rows(~np.isfinite(values).all(axis=1), "missing or infinite feature values", first_row)


def check_labels(column: pd.Series, first_row: int = 0) -> None:
    """Raise ``ValueError`` naming the rows of ``column`` without a value."""
    _fail_rows(column.isna().to_numpy(), f"no {column.name!r} value", first_row)


def _fail_rows(bad: np.ndarray, what: str, first_row: int) -> None:
    if bad.any():
        rows = np.flatnonzero(bad) + first_row
        shown = ", ".join(map(str, rows[:10])) + (" ..." if rows.size > 10 else "")
        raise ValueError(f"{rows.size} row(s) with {what} (data rows from 0): {shown}")
