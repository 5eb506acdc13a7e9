"""Sinks: where journal entries go. Each has a tiny contract; the core's `Delivery` owns the rest."""
