"""The container image (`make image`: Containerfile, bases from Debian's packages, buildah): inside it,
`sessionizer replay` writes what the host writes, and `sessionizer run` commits output on the test broker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from broker import free_port
from kit import ROOT, Job, read_committed

IMAGE = "localhost/sessionizer:0.1.0"
BUILDAH = ["buildah", "--storage-driver", "vfs"]


@pytest.fixture(scope="module")
def container():
    """A working container of the image (built by `make image`, a no-op when up to date)."""
    done = subprocess.run(["make", "-C", str(ROOT), "image"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    made = subprocess.run(BUILDAH + ["from", "--quiet", "--name", f"sessionizer-test-{os.getpid()}", IMAGE],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    name = made.stdout.strip()
    yield name
    subprocess.run(BUILDAH + ["rm", name], capture_output=True, timeout=120)


def inside(container: str, command: list[str], volumes: dict[Path, str], **kwargs) -> list[str]:
    mounts = [arg for host, where in volumes.items() for arg in ("-v", f"{host}:{where}")]
    return BUILDAH + ["run", "--isolation", "chroot", "--network", "host", *mounts, container, "--", *command]


def stop_inside(group: int) -> None:
    """SIGTERM to `sessionizer run` itself, inside the container (buildah, told to stop, would kill it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            in_group = os.getpgid(int(entry.name)) == group
        except (OSError, ProcessLookupError):
            continue
        if in_group and b"buildah" not in command[0] and command[1:3] == [b"/opt/sessionizer/bin/sessionizer", b"run"]:
            os.kill(int(entry.name), signal.SIGTERM)
            return
    os.killpg(group, signal.SIGTERM)


def test_the_image_runs_as_a_non_root_user_with_no_compiler_and_the_compiled_core(container):
    done = subprocess.run(inside(container, ["sh", "-c", "id -u; sessionizer --version; "
                                             "for c in gcc cc cargo rustc; do command -v $c; done; true"], {}),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["10001", "sessionizer 0.1.0 (core: native)"], done.stdout
    assert done.stdout.strip().count("\n") == 1  # no compiler found
    config = subprocess.run(BUILDAH + ["inspect", "--type", "image", "--format",
                                       "{{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}} {{.OCIv1.Config.User}}",
                                       IMAGE], capture_output=True, text=True, timeout=60)
    assert config.stdout.strip() == "[sessionizer] [run --config /etc/sessionizer/config.toml] 10001"


def test_replay_inside_the_image_writes_what_the_host_writes(container, tmp_path):
    out = tmp_path / "image-out"
    out.mkdir()
    out.chmod(0o777)  # written by the image's user
    examples = ROOT / "examples"  # at the same path inside: dead letters name the file they come from
    done = subprocess.run(inside(container, ["sessionizer", "replay", "--config", str(examples / "xtremepush.toml"),
                                             "--output-dir", "/out", str(examples / "sample-spins.jsonl")],
                                 {examples: f"{examples}:ro", out: "/out"}),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    host = tmp_path / "host-out"
    subprocess.run([str(ROOT / ".venv" / "bin" / "sessionizer"), "replay", "--no-progress", "--config",
                    str(ROOT / "examples" / "xtremepush.toml"), "--output-dir", str(host),
                    str(ROOT / "examples" / "sample-spins.jsonl")], check=True, capture_output=True, timeout=120)
    names = sorted(p.name for p in host.iterdir())
    assert names == sorted(p.name for p in out.iterdir()) and len(names) == 4
    for name in names:
        assert (out / name).read_bytes() == (host / name).read_bytes(), name


def test_run_inside_the_image_commits_output_on_the_broker(container, bootstrap, tmp_path):
    job = Job(bootstrap, "image", 2, tmp_path)
    lines = (ROOT / "examples" / "sample-spins.jsonl").read_bytes().splitlines()
    job.produce(lines)
    port = free_port()
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    job.config("img", runtime=f'idle_timeout = "2s"\n\n[metrics]\nhost = "127.0.0.1"\nport = {port}\n').rename(
        config_dir / "config.toml")
    config_dir.chmod(0o755)
    log = open(tmp_path / "image-run.log", "wb")
    process = subprocess.Popen(inside(container, ["sessionizer", "run", "--config", "/etc/sessionizer/config.toml"],
                                      {config_dir: "/etc/sessionizer:ro"}), stdout=log, stderr=log,
                               start_new_session=True)
    try:
        job.wait_until_consumed(240)
        sessions = [orjson.loads(v) for _, v in read_committed(bootstrap, job.outputs["xp-session-events"])]
        assert len(sessions) > 100 and all(s["event"] == "session" for s in sessions)
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            assert response.status == 200
    finally:
        stop_inside(process.pid)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        log.close()
    text = (tmp_path / "image-run.log").read_text()
    assert "core=native" in text and "msg=stopped" in text, text[-3000:]
