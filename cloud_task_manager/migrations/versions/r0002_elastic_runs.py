"""Elastic runs: a task's fewest devices (``min_devices``) and its current run's devices as its
server last reported them (``run_devices``).

The last releases before migrations added both by hand: a database they made has them already
and keeps them.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

ADDED = {"min_devices": sa.Integer, "run_devices": sa.JSON}


def upgrade() -> None:
    """Add the columns ``tasks`` lacks."""
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("tasks")}
    for name, kind in ADDED.items():
        if name not in present:
            op.add_column("tasks", sa.Column(name, kind(), nullable=True))


def downgrade() -> None:
    """Drop the two columns."""
    for name in ADDED:
        op.drop_column("tasks", name)
