"""Pure planning: rows -> CopyImageSet units, the DAG of per-image-set chains, merges,
and the forecast of what a manifest costs."""
