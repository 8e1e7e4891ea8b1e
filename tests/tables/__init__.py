"""seqbatch.tables: long tables and Parquet."""
