"""The ClientApp: raises on its first training message, as AGATA's test-error client did."""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

FAILURE_MESSAGE = "simulated task failure (AGATA test-error)"

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Fail on purpose."""
    raise RuntimeError(FAILURE_MESSAGE)
