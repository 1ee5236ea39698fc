"""`python -m turkey.generate`: put turkey temperature changes on the Kafka topics that
feed `IncreaseTurkeyTemperature` (`increase_temp`) and `DecreaseTurkeyTemperature`
(`decrease_temp`), as protobuf `TemperatureChangeCommand` records with CloudEvents
headers.

    python -m turkey.generate --id myfirstturkey --increase --amount 100 \\
        --bootstrap-servers localhost:9092
"""

from __future__ import annotations

import argparse
import sys
import uuid

from turkey._codegen import ensure_generated

TOPICS = {"increase": "increase_temp", "decrease": "decrease_temp"}
COMMAND_TYPE = "com.example.TemperatureChangeCommand"


def headers(event_id: str) -> list[tuple[str, str | bytes | None]]:
    """CloudEvents 1.0 attributes in binary mode: what the sidecar reads to decode."""
    return [
        ("ce-specversion", b"1.0"),
        ("ce-id", event_id.encode()),
        ("ce-source", b"/turkey/generate"),
        ("ce-type", COMMAND_TYPE.encode()),
        ("ce-datacontenttype", b"application/protobuf"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m turkey.generate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--id", required=True, help="the turkey's id (its entity key)")
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--increase", action="store_true",
                           help=f"raise its temperature (topic {TOPICS['increase']})")
    direction.add_argument("--decrease", action="store_true",
                           help=f"lower its temperature (topic {TOPICS['decrease']})")
    parser.add_argument("--amount", type=float, required=True,
                        help="degrees Fahrenheit per record; more than 0")
    parser.add_argument("--count", type=int, default=1, help="how many records (default 1)")
    parser.add_argument("--bootstrap-servers", default="localhost:9092",
                        help="Kafka's host:port[,host:port] (default localhost:9092)")
    args = parser.parse_args(argv)
    if args.amount <= 0 or args.count < 1:
        parser.error("--amount must be more than 0 and --count at least 1")

    ensure_generated()
    from confluent_kafka import Producer  # noqa: PLC0415 - only this command needs Kafka

    from turkey import turkey_api_pb2 as api  # noqa: PLC0415 - generated just above

    topic = TOPICS["increase" if args.increase else "decrease"]
    value = api.TemperatureChangeCommand(
        turkey_id=args.id, temperature_change=args.amount
    ).SerializeToString()
    producer = Producer({"bootstrap.servers": args.bootstrap_servers,
                         "enable.idempotence": True})
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for _ in range(args.count):
        # Keyed by turkey, so one turkey's changes stay in order on one partition.
        producer.produce(topic, value, key=args.id.encode(),
                         headers=headers(str(uuid.uuid4())), on_delivery=delivered)
    left = producer.flush(30)
    if left or failures:
        print(f"{left + len(failures)} of {args.count} records were not delivered to "
              f"{topic} at {args.bootstrap_servers}: {failures[:1] or 'timed out'}",
              file=sys.stderr)
        return 1
    print(f"{args.count} record(s) sent to {topic}: turkey {args.id} "
          f"{'+' if args.increase else '-'}{args.amount:g} °F each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
