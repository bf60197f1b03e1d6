"""A Parquet dataset in, a partitioned Parquet dataset out, one atomic file per partition.

The input is a directory of Parquet files (read recursively; names starting with ``.`` or
``_`` are skipped, as Spark, Dask and Arrow skip them) or a glob. Each file is one partition,
or several when it holds more than ``partition_rows`` rows in several row groups. A
partition's output mirrors its input's path under the output directory; it is written to a
hidden temporary name and renamed when complete, so a file under its final name is always
whole. A rerun into the same output skips the partitions already there and redoes the rest;
``_ruleeraser_job.json`` records what the job is, so that a rerun of a different job into the
same output is refused rather than mixed in.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ruleeraser.scale.batch import FairScorer, RowBudget, peak_memory_mb

MANIFEST = "_ruleeraser_job.json"
SUCCESS = "_SUCCESS"
PARQUET_SUFFIXES = (".parquet", ".pq")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Partition:
    """Row groups ``row_groups`` of the Parquet file ``source``: ``rows`` rows from row
    ``first_row`` of the file, written to ``name`` under the output directory."""

    source: str
    row_groups: tuple[int, ...]
    first_row: int
    rows: int
    name: str


def is_dataset(data: str | Path) -> bool:
    """Whether ``data`` names a dataset (a directory or a glob) rather than one file."""
    return Path(data).is_dir() or bool(_GLOB_CHARS & set(str(data)))


def dataset_files(data: str | Path) -> tuple[Path, list[Path]]:
    """The dataset's root directory and its Parquet files, sorted (a single file is a
    dataset of one)."""
    text = str(data)
    if Path(text).is_dir():
        root = Path(text)
        files = [
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in PARQUET_SUFFIXES
            and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
        ]
    elif _GLOB_CHARS & set(text):
        files = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
        parents = [str(p.parent.resolve()) for p in files]
        root = Path(os.path.commonpath(parents)) if files else Path(".")
    elif Path(text).is_file():
        root, files = Path(text).parent, [Path(text)]
    else:
        raise FileNotFoundError(f"--data {text}: no such file or directory")
    if not files:
        raise FileNotFoundError(f"--data {text}: no Parquet files ({', '.join(PARQUET_SUFFIXES)})")
    return root.resolve(), sorted(p.resolve() for p in files)


def plan_partitions(data: str | Path, partition_rows: int) -> list[Partition]:
    """The dataset's partitions: each file's row groups, taken in order until a partition
    holds at least ``partition_rows`` rows."""
    import pyarrow.parquet as pq

    if partition_rows < 1:
        raise ValueError(f"partition_rows must be positive, got {partition_rows}")
    root, files = dataset_files(data)
    partitions = []
    for path in files:
        try:
            meta = pq.ParquetFile(path).metadata
        except Exception as exc:  # pyarrow raises its own errors for a file it cannot read
            raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        pieces, piece, piece_rows, first = [], [], 0, 0
        for i, rows in enumerate(groups):
            piece.append(i)
            piece_rows += rows
            if piece_rows >= partition_rows or i == len(groups) - 1:
                pieces.append(piece)
                piece, piece_rows = [], 0
        relative = path.relative_to(root)
        for piece in pieces:  # a file without rows has no partition
            rows = sum(groups[j] for j in piece)
            name = relative if len(pieces) <= 1 else _piece_name(relative, piece[0])
            partitions.append(Partition(str(path), tuple(piece), first, rows, name.as_posix()))
            first += rows
    return partitions


def _piece_name(relative: Path, first_group: int) -> Path:
    return relative.with_name(f"{relative.stem}-rg{first_group:05d}{relative.suffix}")


def dataset_columns(partitions: list[Partition]) -> list[str]:
    """The columns of the dataset's first file."""
    import pyarrow.parquet as pq

    return list(pq.read_schema(partitions[0].source).names)


def write_partition(
    scorer: FairScorer,
    partition: Partition,
    out: str | Path,
    *,
    batch_rows: int,
    job_budget: RowBudget | None = None,
) -> dict[str, Any]:
    """Score one partition, ``batch_rows`` rows at a time, into ``out/partition.name``.

    The rows go to a hidden temporary file in the same directory, synced and renamed to the
    final name when all are written; on any failure the temporary file is removed. Returns
    what was done: the partition's name, rows written, rows sent to a URL model, the
    process's id and peak memory (MB), and when the work started and ended (Unix time).
    """
    final = Path(out) / partition.name
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    sent, started = scorer.rows_sent, time.time()
    try:
        with temporary.open("wb") as file:
            written = _write_rows(scorer, partition, file, batch_rows, job_budget)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return {
        "name": partition.name,
        "rows": written,
        "rows_sent": scorer.rows_sent - sent,
        "pid": os.getpid(),
        "peak_mb": peak_memory_mb(),
        "started": started,
        "ended": time.time(),
    }


def _write_rows(
    scorer: FairScorer,
    partition: Partition,
    file: Any,
    batch_rows: int,
    job_budget: RowBudget | None,
) -> int:
    """The partition's keys (as read, types kept) and results, written to ``file``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys([*scorer.keys, *scorer.features]))
    writer, written = None, 0
    try:
        with pq.ParquetFile(partition.source) as source:
            batches = source.iter_batches(
                batch_size=batch_rows, row_groups=list(partition.row_groups), columns=columns
            )
            for batch in batches:
                start = partition.first_row + written
                where = f"{partition.source} rows {start}-{start + batch.num_rows - 1}"
                results = scorer.score(
                    batch.to_pandas(), where=where, first_row=start, job_budget=job_budget
                )
                table = pa.Table.from_batches([batch.select(scorer.keys)])
                for name, values in results.items():
                    table = table.append_column(name, pa.array(np.asarray(values)))
                if writer is None:
                    writer = pq.ParquetWriter(file, table.schema)
                writer.write_table(table)
                written += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError(f"{partition.source}: partition {partition.name} has no rows")
    return written


def is_complete(partition: Partition, out: str | Path) -> bool:
    """Whether the partition's final file is there with all its rows."""
    import pyarrow.parquet as pq

    path = Path(out) / partition.name
    if not path.is_file():
        return False
    try:
        return pq.ParquetFile(path).metadata.num_rows == partition.rows
    except Exception:  # a file that is not Parquet (pyarrow's own errors) is redone
        return False


def remove_temporaries(out: str | Path) -> int:
    """Remove the temporary files of partitions that were never finished; their count."""
    found = [p for p in Path(out).rglob(".*.tmp") if p.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def job_manifest(partitions: list[Partition], eraser: str | Path, **settings: Any) -> dict:
    """What makes a job this job: the eraser's files (hashed), the settings that shape the
    output (model, columns, partitioning) and each partition's name and rows."""
    digest = hashlib.sha256()
    for path in sorted(Path(eraser).iterdir()):
        if path.is_file() and not path.name.startswith("."):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return {
        "eraser_sha256": digest.hexdigest(),
        **settings,
        "partitions": [{"name": p.name, "rows": p.rows} for p in partitions],
    }


def open_output(out: str | Path, manifest: dict) -> None:
    """Make ``out`` the output of the job ``manifest``, or check that it already is one.

    A new or empty directory gets the manifest; a directory holding the same job's manifest
    is resumed; anything else (another job's output, unrelated files) is refused.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; a dataset's output is a directory")
    path = out / MANIFEST
    if path.is_file():
        saved = json.loads(path.read_text())
        keys = manifest.keys() | saved.keys()
        differ = sorted(k for k in keys if saved.get(k) != manifest.get(k))
        if differ:
            raise ValueError(
                f"--out {out} holds the output of another job (it differs in {differ}): "
                "give a new --out, or remove this one to start over"
            )
        return
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out {out} is not empty and holds no {MANIFEST}: give a new --out")
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1))
    os.replace(temporary, path)


def finish_output(partitions: list[Partition], out: str | Path) -> None:
    """Check every partition is complete, then mark the output done (``_SUCCESS``)."""
    missing = [p.name for p in partitions if not is_complete(p, out)]
    if missing:
        raise RuntimeError(f"{len(missing)} partition(s) missing from {out}: {missing[:5]}")
    (Path(out) / SUCCESS).touch()
