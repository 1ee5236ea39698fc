"""The descriptor comparison notices each kind of difference it claims to."""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from tests.unit.protocol.descriptor_diff import diff_files

FieldDescriptorProto = descriptor_pb2.FieldDescriptorProto


def _sample() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="a/b.proto", package="a", syntax="proto3")
    file.options.java_package = "com.a"
    message = file.message_type.add(name="Outer")
    message.oneof_decl.add(name="choice")
    message.field.add(
        name="first_id",
        number=1,
        type=FieldDescriptorProto.TYPE_STRING,
        label=FieldDescriptorProto.LABEL_OPTIONAL,
        json_name="firstId",
        oneof_index=0,
    )
    nested = message.nested_type.add(name="Inner")
    nested.field.add(
        name="count",
        number=1,
        type=FieldDescriptorProto.TYPE_INT64,
        label=FieldDescriptorProto.LABEL_REPEATED,
    )
    enum = file.enum_type.add(name="Kind")
    enum.value.add(name="KIND_UNSPECIFIED", number=0)
    service = file.service.add(name="Things")
    service.method.add(
        name="Handle", input_type=".a.Outer", output_type=".a.Outer", client_streaming=True
    )
    return file


def test_identical_files_have_no_differences() -> None:
    assert diff_files(_sample(), _sample()) == []


def test_reports_changed_nested_field_number() -> None:
    actual = _sample()
    actual.message_type[0].nested_type[0].field[0].number = 2
    assert diff_files(_sample(), actual) == [
        "a/b.proto message Outer message Inner field count: number expected 1, got 2"
    ]


def test_reports_missing_and_unexpected_elements() -> None:
    actual = _sample()
    del actual.enum_type[:]
    actual.message_type.add(name="Extra")
    assert sorted(diff_files(_sample(), actual)) == [
        "a/b.proto enum Kind: missing",
        "a/b.proto message Extra: not in the published descriptor",
    ]


def test_reports_oneof_label_and_json_name_changes() -> None:
    actual = _sample()
    field = actual.message_type[0].field[0]
    field.ClearField("oneof_index")
    field.json_name = "first_ID"
    field.label = FieldDescriptorProto.LABEL_REPEATED
    assert sorted(diff_files(_sample(), actual)) == [
        "a/b.proto message Outer field first_id: json_name expected 'firstId', got 'first_ID'",
        "a/b.proto message Outer field first_id: label expected 'LABEL_OPTIONAL',"
        " got 'LABEL_REPEATED'",
        "a/b.proto message Outer field first_id: oneof_index expected 0, got None",
    ]


def test_ignores_json_name_when_the_published_side_omits_it() -> None:
    expected = _sample()
    expected.message_type[0].field[0].ClearField("json_name")
    assert diff_files(expected, _sample()) == []


def test_reports_streaming_and_options_changes() -> None:
    actual = _sample()
    actual.service[0].method[0].client_streaming = False
    actual.options.java_package = "com.b"
    assert diff_files(_sample(), actual) == [
        'a/b.proto: options expected {java_package: "com.a"}, got {java_package: "com.b"}',
        "a/b.proto service Things rpc Handle: client_streaming expected True, got False",
    ]


def test_reports_unknown_custom_options_by_their_bytes() -> None:
    expected, actual = _sample(), _sample()
    # Field 50000 is a custom option the descriptor pool knows nothing about.
    expected.message_type[0].options.MergeFromString(b"\x80\xb5\x18\x01")
    actual.message_type[0].options.MergeFromString(b"\x80\xb5\x18\x02")
    assert diff_files(expected, actual) == [
        "a/b.proto message Outer: options expected 80b51801, got 80b51802"
    ]
