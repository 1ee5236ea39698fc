# The SDK ships no type information and the generated modules exist only at run
# time (in the SDK's virtualenv), so our type checker cannot see either.
# mypy: disable-error-code="import-untyped,import-not-found,untyped-decorator"
"""Items (a value entity) and a view of them, written with the published PyPI SDK
``akkaserverless`` 0.1.13 (which cannot delete a value entity's state). The view has no
update handler: the SDK serves no ``Views/Handle``, and without ``transform_updates`` the
sidecar stores the state as the row.

Runs in the SDK's own virtualenv with the modules generated from
``../proto/compatitems/items.proto`` on ``PYTHONPATH``. No ``from __future__ import
annotations``: the SDK checks handler arguments against real classes.
"""

from akkaserverless.akkaserverless_service import AkkaServerlessService
from akkaserverless.value_context import ValueEntityCommandContext
from akkaserverless.value_entity import ValueEntity
from akkaserverless.view import View
from compatitems import items_pb2 as pb
from google.protobuf.empty_pb2 import Empty

entity = ValueEntity(
    pb.DESCRIPTOR.services_by_name["ItemsService"], [pb.DESCRIPTOR], "items", lambda _id: pb.Item()
)


@entity.command_handler("Put")
def put(state: pb.Item, command: pb.Item, context: ValueEntityCommandContext) -> Empty:
    context.update_state(command)
    return Empty()


view = View(pb.DESCRIPTOR.services_by_name["ItemsByPrice"], [pb.DESCRIPTOR])

if __name__ == "__main__":
    AkkaServerlessService().add_component(entity).add_component(view).start()
