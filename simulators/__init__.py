"""citygw simulators package."""
