"""The client device's bridge to the cloud: client RPCs forwarded over HTTP, durable reports,
task events relayed from the cloud's long poll onto the client broker."""
