"""The device side: reports stats, picks compatible tasks, runs their Flower clients."""
