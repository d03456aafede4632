"""Reports out: the Parquet report and its schema, rows derived from the journal, the
summary JSON, the retry manifest, views (table, JSON, HTML)."""
