"""Digits as a Flower App (ours): FedAvg of a torch MLP on the shipped 8x8 digits."""
