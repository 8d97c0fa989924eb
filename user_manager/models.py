"""The user manager's tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Float, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agata_common.database import UtcDateTime, utcnow


class Base(DeclarativeBase):
    """Declarative base of the user manager's schema."""


class Client(Base):
    """A client device and its latest stats."""

    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data_qnt: Mapped[int] = mapped_column(Integer, default=0)
    avg_acc_contrib: Mapped[float | None] = mapped_column(Float, nullable=True)
    avg_disconnection_per_round: Mapped[float | None] = mapped_column(Float, nullable=True)
    sensors: Mapped[list[str]] = mapped_column(JSON, default=list)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    modified: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
