"""citygw gateway package."""
