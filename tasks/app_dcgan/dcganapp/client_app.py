"""The ClientApp: trains the received generator and discriminator on this device's shard.

The shard comes from ``context.node_config`` (``partition-id`` of ``num-partitions``), which the
runtime assigns among the devices of the run. One log line per local epoch goes to the logger
``dcganapp`` (stdout when nothing configured logging before).
"""

import logging
import sys

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from dcganapp import task

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

logger = logging.getLogger("dcganapp")
logger.setLevel(logging.INFO)
if not logging.getLogger().handlers:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format=LOG_FORMAT)

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train both received networks for ``local-epochs`` on this device's shard."""
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    config = msg.content.config_records["config"]
    server_round = int(config["server-round"])
    generator, discriminator = task.build_models(int(context.run_config["latent-dim"]))
    task.load_joint_state_dict(msg.content.array_records["arrays"].to_torch_state_dict(),
                               generator, discriminator)
    images = task.load_partition(partition_id, num_partitions)

    def log_epoch(epoch: int, d_loss: float, g_loss: float) -> None:
        logger.info("round %d epoch %d: d_loss %.4f g_loss %.4f (partition %d/%d, %d images)",
                    server_round, epoch, d_loss, g_loss, partition_id, num_partitions,
                    len(images))

    losses = task.train(
        generator, discriminator, images,
        epochs=int(context.run_config["local-epochs"]),
        lr=float(config["lr"]),
        batch_size=int(context.run_config["batch-size"]),
        seed=task.run_seed(int(context.run_config["seed"]), server_round, partition_id),
        on_epoch=log_epoch,
    )
    content = RecordDict({
        "arrays": ArrayRecord(task.joint_state_dict(generator, discriminator)),
        "metrics": MetricRecord({"d_loss": losses.d_loss, "g_loss": losses.g_loss,
                                 "num-examples": len(images)}),
    })
    return Message(content=content, reply_to=msg)
