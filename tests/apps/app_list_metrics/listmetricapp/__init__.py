"""A Flower App reporting list-valued metrics (tests only)."""
