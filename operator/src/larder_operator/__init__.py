"""Larder's Kubernetes operator: StatefulFunction and Journal resources, reconciled by kopf.

Run it with the ``larder-operator`` command; embed it with ``build_registry`` and
``kopf.operator(registry=...)``.
"""

from larder_operator.handlers import build_registry
from larder_operator.settings import OperatorSettings, SettingsError

__all__ = ["OperatorSettings", "SettingsError", "build_registry"]
