"""The event reader process: collects every service's experiment events into ``events.json``."""
