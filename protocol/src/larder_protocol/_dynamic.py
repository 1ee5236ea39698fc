"""Message classes made at run time from descriptors.

The sidecar, the TCK and the tests build message classes from descriptors they
discover (a user function's `FileDescriptorSet`, the TCK's model protos). protobuf's
stubs type `GetMessageClass` as returning `type[Message]`, whose constructor takes no
fields, which is true only of `Message` itself: the class made from a descriptor takes
that descriptor's fields as keyword arguments, and checks them when called (an unknown
field is a `ValueError`). `DynamicMessageClass` says exactly that, in one place.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message


class DynamicMessageClass(Protocol):
    """A message class made from a descriptor: fields are known only at run time."""

    DESCRIPTOR: Descriptor

    def __call__(self, **fields: Any) -> Message: ...

    def FromString(self, serialized: bytes, /) -> Message: ...  # protobuf's name


def message_class(descriptor: Descriptor) -> DynamicMessageClass:
    """The message class of `descriptor` (made once per descriptor, then cached by
    protobuf)."""
    # The one cast: see the module docstring for why the stubs' type is too narrow.
    return cast(DynamicMessageClass, message_factory.GetMessageClass(descriptor))
