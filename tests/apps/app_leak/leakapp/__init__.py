"""A Flower App that tries to read secrets, other runs and processes, to write outside its
results folder and to open the broker and the cloud gateway, then reports what it managed
(tests only)."""
