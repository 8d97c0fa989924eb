"""A Flower App (ours) whose ClientApp raises: AGATA's ``test-error`` task on the new API."""
