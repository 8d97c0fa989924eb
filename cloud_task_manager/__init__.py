"""Federated tasks on the cloud: records, selection criteria, files, and their Flower servers."""
