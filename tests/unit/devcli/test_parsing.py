"""`larder dev`'s arguments and its function-directory conventions."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from larder_dev.cli import parse_dev_args
from larder_dev.examples import ReflectedService, generic_examples, readme_examples
from larder_dev.function import DevInputError, discover, parse_procfile, slug
from larder_dev.ports import check_ports_free

REPO = Path(__file__).resolve().parents[3]


def test_the_cart_sample_is_found_by_its_larder_toml() -> None:
    settings = parse_dev_args(["samples/shopping-cart"], cwd=REPO)
    spec = settings.function
    assert (spec.name, spec.command, spec.source) == (
        "shopping-cart", ("python", "-m", "shoppingcart"), "larder.toml")
    assert spec.env == {"PYTHONPATH": "src"}
    assert spec.cwd == REPO / "samples" / "shopping-cart"
    assert (settings.public_port, settings.admin_port, settings.function_port) == (9000, 9603, 8080)
    assert settings.journal == "sqlite"
    assert settings.journal_path == REPO / ".larder" / "shopping-cart" / "journal.db"


def test_options_override_the_defaults(tmp_path: Path) -> None:
    settings = parse_dev_args(
        ["--port", "9100", "--function-port", "8181", "--journal", "memory",
         "--data-dir", str(tmp_path), "--name", "My Cart", "samples/shopping-cart"], cwd=REPO)
    assert (settings.public_port, settings.function_port, settings.journal) == (
        9100, 8181, "memory")
    assert settings.journal_path == tmp_path / "my-cart" / "journal.db"


def test_a_command_after_the_double_dash_is_run_as_is(tmp_path: Path) -> None:
    settings = parse_dev_args(["--port", "9001", "--", "node", "index.js", "--port", "1"],
                              cwd=tmp_path)
    assert settings.function.command == ("node", "index.js", "--port", "1")
    assert settings.function.name == "node-index-js-port-1"
    assert settings.function.cwd == tmp_path
    assert settings.public_port == 9001


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "nothing to run"),
        (["--"], "no start command after `--`"),
        (["samples", "--", "x"], "either a function directory or a command"),
        (["does-not-exist"], "does not exist"),
    ],
)
def test_unrunnable_input_is_explained(argv: list[str], message: str) -> None:
    with pytest.raises(DevInputError, match=message):
        parse_dev_args(argv, cwd=REPO)


def test_bad_option_values_are_usage_errors() -> None:
    with pytest.raises(SystemExit) as exited:
        parse_dev_args(["--port", "70000", "samples/shopping-cart"], cwd=REPO)
    assert exited.value.code == 2


def test_a_directory_without_any_convention_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DevInputError, match=r"no user function in .*larder\.toml"):
        discover(tmp_path)


def test_larder_toml_command_may_be_a_string_and_is_validated(tmp_path: Path) -> None:
    (tmp_path / "larder.toml").write_text('[function]\ncommand = "node index.js"\nport = 8081\n')
    spec = discover(tmp_path)
    assert (spec.command, spec.port, spec.name) == (("node", "index.js"), 8081, slug(tmp_path.name))
    (tmp_path / "larder.toml").write_text("[function]\ncommand = []\n")
    with pytest.raises(DevInputError, match=r"function\.command must be"):
        discover(tmp_path)
    (tmp_path / "larder.toml").write_text("[function\n")
    with pytest.raises(DevInputError, match="not valid TOML"):
        discover(tmp_path)


def test_a_procfile_web_line_runs_through_the_shell(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("# comment\nworker: python w.py\nweb: node s.js $PORT\n")
    spec = discover(tmp_path)
    assert spec.command == ("sh", "-c", "exec node s.js $PORT")
    assert spec.source == "Procfile"
    assert parse_procfile("a: x\n\nbad line\n") == {"a": "x"}


def test_a_package_json_start_script_runs_with_npm(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(json.dumps(
        {"name": "@acme/turkey", "scripts": {"start": "node index.js"}}))
    spec = discover(tmp_path)
    assert (spec.command, spec.name, spec.source) == (("npm", "start"), "acme-turkey",
                                                      "package.json")


def test_readme_examples_are_retargeted_and_joined(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("curl outside a block\n```sh\nmake dev\ncurl localhost:9000/a \\\n"
                      "  -d '{}'\n```\n```\ngrpcurl -plaintext localhost:9000 x/Y\n```\n")
    assert readme_examples(readme, 9100) == [
        "curl localhost:9100/a -d '{}'", "grpcurl -plaintext localhost:9100 x/Y"]
    assert readme_examples(tmp_path / "missing.md", 9000) == []


def test_a_port_in_use_names_the_option_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DevInputError, match=f"port {port} is already in use.*--admin-port"):
            check_ports_free({"--admin-port": port})
    with pytest.raises(DevInputError, match="--port and --function-port are both 9"):
        check_ports_free({"--function-port": 9, "--port": 9})


def test_generic_examples_fill_every_entity_key_field() -> None:
    f = descriptor_pb2.FieldDescriptorProto
    service = descriptor_pb2.ServiceDescriptorProto(name="Orders")
    service.method.add(name="Place", input_type=".shop.PlaceOrder")
    service.method.add(name="Ping", input_type=".shop.Ping")
    service.method.add(name="Watch", input_type=".shop.Ping", server_streaming=True)
    keys = {"Place": (("shop_id", f.TYPE_STRING), ("order_no", f.TYPE_INT64),
                      ("draft", f.TYPE_BOOL))}
    assert generic_examples([ReflectedService("shop.Orders", service, keys)], 9100) == [
        "curl -X POST -H 'Content-Type: application/json' localhost:9100/shop.Orders/Place "
        """-d '{"shop_id": "example-1", "order_no": 1, "draft": true}'""",
        "curl -X POST -H 'Content-Type: application/json' localhost:9100/shop.Orders/Ping "
        "-d '{}'",
    ]
