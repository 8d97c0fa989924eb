"""The single public HTTP entry of the cloud side (aiohttp)."""
