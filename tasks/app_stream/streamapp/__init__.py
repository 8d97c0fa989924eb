"""A NumPy Flower App (ours) whose ServerApp holds as little as FedAvg allows: the model it
sends, the replies not yet added, and the sum it builds."""
