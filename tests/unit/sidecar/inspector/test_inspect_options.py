"""`larder inspect`'s journal options, checked before anything is contacted."""

from __future__ import annotations

import pytest
from larder_sidecar.inspector.cli import _contact_points
from larder_sidecar.inspector.views import InspectInputError

from .conftest import inspect


def test_contact_points_take_one_port_for_all() -> None:
    assert _contact_points("a,b") == (["a", "b"], 9042)
    assert _contact_points("a:9142, b") == (["a", "b"], 9142)
    assert _contact_points("::1") == (["::1"], 9042)


@pytest.mark.parametrize(("text", "said"), [
    ("a:1,b:2", "names several ports"),
    ("a,,b", "has an empty host"),
    ("a:http", "is not a port"),
    (":9042", "has an empty host"),
])
def test_bad_contact_points_are_said(text: str, said: str) -> None:
    with pytest.raises(InspectInputError, match=said):
        _contact_points(text)


def test_credentials_need_both_variables() -> None:
    shown = inspect("types", "--cassandra", "127.0.0.1:1",
                    env={"LARDER_JOURNAL_CASSANDRA_USERNAME": "u"})
    assert (shown.code, shown.err) == (2, (
        "larder inspect: set both LARDER_JOURNAL_CASSANDRA_USERNAME and "
        "LARDER_JOURNAL_CASSANDRA_PASSWORD for password authentication, or neither\n"))


def test_a_keyspace_that_is_not_a_cassandra_name_is_said_before_connecting() -> None:
    shown = inspect("types", "--cassandra", "127.0.0.1:1", "--keyspace", "larder; DROP")
    assert shown.code == 2
    assert "'larder; DROP' is not a Cassandra keyspace name" in shown.err


def test_sqlite_cassandra_and_admin_are_one_or_the_other() -> None:
    for both in (("--sqlite", "x.db", "--cassandra", "h"), ("--sqlite", "x.db", "--admin", "h")):
        shown = inspect("types", *both)
        assert shown.code == 2
        assert "give one journal: --sqlite PATH, --cassandra HOST[:PORT],... or --admin URL" in (
            shown.err
        )


def test_a_token_file_without_admin_or_an_admin_url_that_is_not_one_is_said() -> None:
    shown = inspect("types", "--sqlite", "x.db", "--token-file", "t")
    assert (shown.code, shown.err) == (2, "larder inspect: --token-file goes with --admin\n")
    shown = inspect("types", "--admin", "ftp://host:9603")
    assert shown.code == 2
    assert "'ftp://host:9603' is not a sidecar's admin address (http://HOST:9603)" in shown.err
