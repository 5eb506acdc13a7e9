"""citygw ingest package."""
