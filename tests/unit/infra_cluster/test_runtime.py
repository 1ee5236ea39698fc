"""Container semantics the node agent follows: argv, image config, mount targets."""

from __future__ import annotations

from pathlib import Path

from tests.infra.cluster import runtime

IMAGE = runtime.ImageConfig(entrypoint=("tini", "--"), cmd=("serve", "--port=1"))


def test_command_replaces_entrypoint_and_drops_cmd() -> None:
    assert runtime.resolve_argv(IMAGE, ["run"], None) == ["run"]
    assert runtime.resolve_argv(IMAGE, ["run"], ["a"]) == ["run", "a"]


def test_args_replace_only_cmd() -> None:
    assert runtime.resolve_argv(IMAGE, None, ["other"]) == ["tini", "--", "other"]
    assert runtime.resolve_argv(IMAGE, None, None) == ["tini", "--", "serve", "--port=1"]


def test_image_config_comes_from_the_oci_config() -> None:
    config = runtime.image_config_from_inspect(
        {
            "OCIv1": {
                "config": {
                    "Entrypoint": ["e"],
                    "Cmd": ["c"],
                    "Env": ["A=1=2", "B="],
                    "WorkingDir": "/app",
                    "User": "10001",
                }
            }
        }
    )
    assert config == runtime.ImageConfig(("e",), ("c",), (("A", "1=2"), ("B", "")), "/app", "10001")
    assert runtime.image_config_from_inspect({}) == runtime.ImageConfig()


def test_mount_targets_follow_the_images_symlinks_inside_the_image(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("/run")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "conf").symlink_to("../opt/conf")
    (tmp_path / "escape").symlink_to("../../../../..")
    resolve = runtime.resolve_in_rootfs
    assert resolve(tmp_path, "/var/run/secrets/x") == "/run/secrets/x"
    assert resolve(tmp_path, "/etc/conf/a") == "/opt/conf/a"
    assert resolve(tmp_path, "/tmp") == "/tmp"
    # `..` never leaves the image's root.
    assert resolve(tmp_path, "/escape/etc") == "/etc"


def test_the_command_line_runs_buildah_inside_the_namespace() -> None:
    spec = runtime.RunSpec(
        container="lrd-1-main",
        netns="lrd-1",
        argv=("python3", "-m", "x"),
        env=(("A", "1"),),
        workdir="/w",
        user="10001:10001",
        mounts=(("/h", "/c:ro"),),
    )
    assert spec.command_line() == [
        "ip",
        "netns",
        "exec",
        "lrd-1",
        "buildah",
        "run",
        "--isolation",
        "chroot",
        "--env",
        "A=1",
        "--workingdir",
        "/w",
        "--user",
        "10001:10001",
        "--volume",
        "/h:/c:ro",
        "lrd-1-main",
        "--",
        "python3",
        "-m",
        "x",
    ]
