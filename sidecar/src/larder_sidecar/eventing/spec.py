"""Which methods are fed from topics and which publish to topics, read from the user's
`(akkaserverless.method).eventing` options."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2

from ..model import Method, UserFunctionModel
from ..protocol import annotations_pb2


@dataclass(frozen=True, slots=True)
class Subscription:
    """`eventing.in = {topic, consumer_group}`: the topic's records become commands."""

    method: Method
    topic: str
    consumer_group: str
    """Defaults to the method's service name when the option leaves it empty."""


@dataclass(frozen=True, slots=True)
class Publication:
    """`eventing.out = {topic}`: the method's replies are published."""

    method: Method
    topic: str


@dataclass(frozen=True, slots=True)
class EventingSpec:
    subscriptions: tuple[Subscription, ...]
    publications: tuple[Publication, ...]
    problems: tuple[str, ...]
    """Eventing options this sidecar cannot honour (one line each)."""

    @property
    def declared(self) -> bool:
        return bool(self.subscriptions or self.publications)

    def publication(self, method: Method) -> Publication | None:
        for p in self.publications:
            if p.method is method:
                return p
        return None

    def groups(self) -> dict[str, dict[str, Subscription]]:
        """Consumer group -> topic -> subscription."""
        out: dict[str, dict[str, Subscription]] = {}
        for s in self.subscriptions:
            out.setdefault(s.consumer_group, {})[s.topic] = s
        return out


_METHOD_OPTION: Any = annotations_pb2.method


def _method_options(
    file_set: descriptor_pb2.FileDescriptorSet,
) -> Iterator[tuple[str, str, Any]]:
    for f in file_set.file:
        prefix = f"{f.package}." if f.package else ""
        for service in f.service:
            for m in service.method:
                if m.options.HasExtension(_METHOD_OPTION):
                    yield prefix + service.name, m.name, m.options.Extensions[_METHOD_OPTION]


def read_eventing(model: UserFunctionModel) -> EventingSpec:
    """Collect every eventing option of the served methods, and every problem at once."""
    subscriptions: list[Subscription] = []
    publications: list[Publication] = []
    problems: list[str] = []
    claimed: dict[tuple[str, str], str] = {}
    for service, name, options in _method_options(model.file_set):
        method = model.method(service, name)
        if method is None or not options.HasField("eventing"):
            continue
        eventing = options.eventing
        where = f"{service}.{name}"
        if eventing.HasField("in"):
            source = getattr(eventing, "in")
            kind = source.WhichOneof("source")
            if kind == "topic" and source.topic:
                if method.model.client_streaming or method.model.server_streaming:
                    problems.append(f"{where}: a streamed method cannot be fed from a topic")
                else:
                    group = source.consumer_group or service
                    other = claimed.get((group, source.topic))
                    if other is not None:
                        problems.append(
                            f"{where}: topic {source.topic!r} in consumer group {group!r} "
                            f"already feeds {other}; give one of them its own consumer_group"
                        )
                    else:
                        claimed[(group, source.topic)] = where
                        subscriptions.append(Subscription(method, source.topic, group))
            elif kind in ("event_sourced_entity", "value_entity"):
                article = "an" if kind.startswith("e") else "a"
                problems.append(
                    f"{where}: eventing.in from {article} {kind.replace('_', ' ')} is not "
                    "supported by this sidecar yet (only topics)"
                )
            else:
                problems.append(f"{where}: eventing.in names no topic")
        if eventing.HasField("out"):
            if eventing.out.topic:
                if method.model.server_streaming:
                    problems.append(f"{where}: a streamed method cannot publish to a topic")
                else:
                    publications.append(Publication(method, eventing.out.topic))
            else:
                problems.append(f"{where}: eventing.out names no topic")
    return EventingSpec(tuple(subscriptions), tuple(publications), tuple(problems))
