"""A plain Flower App: FedAvg of a small vector, as Flower's own examples are written."""
