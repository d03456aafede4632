"""Manifests out of a query (`batchcopy select`): --where conditions, the search and the
metadata reads, the rows of each source, the cache that lets a select continue, the
manifest written."""
