"""Pieces shared by every AGATA process: configuration, logging, databases, process lifecycle."""
