"""``agata``: the operators' console command over the cloud gateway's HTTP API."""
