"""The registry of client devices and their stats (AGATA's user manager)."""
