"""Eventing: Kafka topics feed methods (`eventing.in`) and receive their replies
(`eventing.out`), with CloudEvents headers on the wire. See docs/eventing.md."""

from .service import Eventing, EventingError
from .settings import KafkaSettings, KafkaSettingsError, load_kafka_settings

__all__ = [
    "Eventing",
    "EventingError",
    "KafkaSettings",
    "KafkaSettingsError",
    "load_kafka_settings",
]
