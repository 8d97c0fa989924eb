"""A Flower App that tries to read secrets, other runs and processes, and to write outside its
results folder, then reports what it managed (tests only)."""
