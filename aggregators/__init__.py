"""citygw aggregators package."""
