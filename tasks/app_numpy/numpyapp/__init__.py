"""A trivial NumPy Flower App (ours): each device pulls a vector towards its own target."""
