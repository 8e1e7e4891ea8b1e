"""Long tables (pandas, polars, Arrow) and Parquet files as many series.

A long table has one row per (series, time): a series-id column, a time column and value
columns, the form of forecasting datasets (``unique_id, ds, y``) and of Spark's Parquet
exports. :meth:`seqbatch.StreamBatcher.from_frame` sorts an in-memory table into series; :meth:`seqbatch.StreamBatcher.from_parquet` reads
files lazily, row group by row group, when the rows of each series lie together in time
order (:func:`sort_parquet` writes them so). Both give a :class:`TableBatcher`, whose
``series_ids`` name the series of ``batch.series`` and whose ``by_series_frame`` puts model
outputs back in a table keyed by id and time.

Needs ``pip install "seqbatch[tables]"`` (pandas, polars, pyarrow); they are imported only
when these functions run.
"""

from __future__ import annotations

from seqbatch.tables.batcher import TableBatcher
from seqbatch.tables.columns import Ahead, ahead
from seqbatch.tables.frame import from_frame
from seqbatch.tables.grid import Gaps
from seqbatch.tables.parquet import from_parquet, sort_parquet

__all__ = ["Ahead", "Gaps", "TableBatcher", "ahead", "from_frame", "from_parquet", "sort_parquet"]
