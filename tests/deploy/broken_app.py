"""A worker module whose import fails, for the bad-target test of moorage worker."""

raise RuntimeError("boom at import")
