"""A Ray Data source over the Parquet files of one Delta table version.

``ray.data.read_delta`` (Ray 2.60) samples a few files in Ray tasks that ask for a
whole CPU, whatever ``num_cpus`` the read is given; beside Serve on 2 CPUs no such
task ever starts and the read waits forever. Here the driver lists the version's
files from the Delta log (rows and sizes included), and each read task reads its
files, with the resources the caller gives it, 131,072 rows at a time: a task that
read a whole file (or a 1M-row group) before yielding held it all at once, and a
table larger than the object store spilled (tests/cluster/test_stream_small_store.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

BATCH_ROWS = 131_072


class DeltaFiles(Datasource):
    """The files of one table version (paths relative to ``filesystem``), read as ``schema``."""

    def __init__(
        self,
        paths: list[str],
        rows: list[int | None],
        sizes: list[int],
        schema: pa.Schema,
        filesystem: pafs.FileSystem,
    ) -> None:
        super().__init__()
        self.paths, self.rows, self.sizes = paths, rows, sizes
        self.schema, self.filesystem = schema, filesystem

    def estimate_inmemory_data_size(self) -> int | None:
        return sum(self.sizes)

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: object = None
    ) -> list[ReadTask]:
        groups = [list(range(len(self.paths)))[i::parallelism] for i in range(min(parallelism, len(self.paths)))]
        return [self._task(group, per_task_row_limit) for group in groups if group]

    def _task(self, group: list[int], row_limit: int | None) -> ReadTask:
        paths = [self.paths[i] for i in group]
        rows = [self.rows[i] for i in group]
        meta = BlockMetadata(
            num_rows=None if None in rows else sum(cast(list[int], rows)),
            size_bytes=sum(self.sizes[i] for i in group),
            input_files=tuple(paths),
            exec_stats=None,
        )
        schema, fs = self.schema, self.filesystem

        def read() -> Iterator[pa.Table]:
            for path in paths:
                with fs.open_input_file(path) as f:
                    parquet = pq.ParquetFile(f)
                    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=schema.names):
                        yield pa.Table.from_batches([batch]).cast(schema)

        return ReadTask(read, meta, schema=schema, per_task_row_limit=row_limit)

    def get_name(self) -> str:
        return "DeltaFiles"

    def probe(self, rows: int = 1024) -> None:
        """Read the first rows of the first and last files now (as Ray's Parquet reader does
        while planning), so a damaged file fails the read here, before any work is done.

        Raises:
            OSError: naming the file that cannot be read.
        """
        for path in dict.fromkeys([self.paths[0], self.paths[-1]] if self.paths else []):
            try:
                with self.filesystem.open_input_file(path) as f:
                    next(pq.ParquetFile(f).iter_batches(batch_size=rows, columns=self.schema.names), None)
            except (OSError, pa.ArrowException) as err:
                raise OSError(f"{path}: cannot read: {err}") from err
