"""Running unmodified Flower Apps: the app's manifest, and (in process-side modules) the
ServerApp host and the device's ClientApp worker."""
