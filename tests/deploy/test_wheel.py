"""The package as users install it: the manylinux abi3 wheel (`make wheel`) in a fresh venv with no Rust
toolchain on PATH, `pip install .` from the source tree, and the sdist built by pip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"
SAMPLE = ROOT / "examples" / "sample-spins.jsonl"
CONFIG = ROOT / "examples" / "xtremepush.toml"
PYTHON = "/usr/bin/python3.11" if Path("/usr/bin/python3.11").exists() else sys.executable


def no_rust_path() -> str:
    """PATH without any Rust toolchain (rustup's ~/.cargo/bin)."""
    kept = [p for p in os.environ["PATH"].split(os.pathsep) if ".cargo" not in p and ".rustup" not in p]
    path = os.pathsep.join(kept)
    assert shutil.which("cargo", path=path) is None and shutil.which("rustc", path=path) is None
    return path


@pytest.fixture(scope="session")
def built() -> dict[str, Path]:
    """The wheel and the sdist, built by `make wheel` (a no-op when they are up to date)."""
    done = subprocess.run(["make", "-C", str(ROOT), "wheel"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels, sdists = sorted(DIST.glob("sessionizer-*.whl")), sorted(DIST.glob("sessionizer-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(DIST.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def fresh_venv(where: Path, env: dict[str, str]) -> Path:
    subprocess.run([PYTHON, "-m", "venv", str(where)], check=True, env=env, timeout=120)
    return where / "bin"


def host_replay(out: Path) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "sessionizer"), "replay", "--no-progress", "--config",
                           str(CONFIG), "--output-dir", str(out), str(SAMPLE)], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr


def assert_same_files(left: Path, right: Path) -> None:
    names = sorted(p.name for p in left.iterdir())
    assert names == sorted(p.name for p in right.iterdir()) and len(names) == 4
    for name in names:
        assert (left / name).read_bytes() == (right / name).read_bytes(), name


def test_the_wheel_is_one_manylinux2014_abi3_wheel_with_the_compiled_core(built):
    wheel = built["wheel"]
    assert "-cp311-abi3-" in wheel.name and "manylinux2014_x86_64" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "sessionizer/_native.abi3.so" in names and "sessionizer/core/partition.py" in names
    shown = subprocess.run([str(Path(sys.executable).parent / "auditwheel"), "show", str(wheel)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and 'consistent with the following platform tag: "manylinux_2_17_x86_64"' in \
        " ".join(shown.stdout.split()), shown.stdout


def test_the_wheel_installs_and_replays_with_the_compiled_core_without_rust(built, tmp_path):
    env = {**os.environ, "PATH": no_rust_path()}
    env.pop("SESSIONIZER_CORE", None)
    bin_dir = fresh_venv(tmp_path / "venv", env)
    install = subprocess.run([str(bin_dir / "pip"), "install", "-q", str(built["wheel"])], env=env,
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    version = subprocess.run([str(bin_dir / "sessionizer"), "--version"], env=env, capture_output=True, text=True)
    assert version.stdout.strip() == "sessionizer 0.1.0 (core: native)"
    done = subprocess.run([str(bin_dir / "sessionizer"), "replay", "--no-progress", "--config", str(CONFIG),
                           "--output-dir", str(tmp_path / "wheel-out"), str(SAMPLE)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    host_replay(tmp_path / "host-out")
    assert_same_files(tmp_path / "wheel-out", tmp_path / "host-out")
    # Kafka support is part of the default install.
    imported = subprocess.run([str(bin_dir / "python"), "-c", "import confluent_kafka, sessionizer.kafka.runtime"],
                              env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr


def test_pip_install_dot_builds_both_cores_in_one_step(tmp_path):
    env = {**os.environ}
    env.pop("SESSIONIZER_CORE", None)
    bin_dir = fresh_venv(tmp_path / "venv", env)
    install = subprocess.run([str(bin_dir / "pip"), "install", "-q", str(ROOT)], env=env, capture_output=True,
                             text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    version = subprocess.run([str(bin_dir / "sessionizer"), "--version"], env=env, capture_output=True, text=True)
    assert version.stdout.strip() == "sessionizer 0.1.0 (core: native)"
    python = subprocess.run([str(bin_dir / "sessionizer"), "--version"], env={**env, "SESSIONIZER_CORE": "python"},
                            capture_output=True, text=True)
    assert python.stdout.strip() == "sessionizer 0.1.0 (core: python)"


def test_the_sdist_builds_with_pip_where_rust_is_present(built, tmp_path):
    with tarfile.open(built["sdist"]) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "native/Cargo.toml", "native/Cargo.lock", "native/src/lib.rs",
            "src/sessionizer/cli.py", "src/sessionizer/core/native.py"} <= names
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheels"),
                           str(built["sdist"])], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "CARGO_TARGET_DIR": str(ROOT / ".cache" / "sdist-target")})
    assert done.returncode == 0, done.stderr[-3000:]
    built_wheels = list((tmp_path / "wheels").glob("sessionizer-*.whl"))
    assert len(built_wheels) == 1
    with zipfile.ZipFile(built_wheels[0]) as archive:
        assert any(name.startswith("sessionizer/_native") for name in archive.namelist())


def test_without_the_compiled_core_replay_says_so_once_and_how_to_fix_it(tmp_path):
    """A source tree copy with no _native module: the pure-Python core, and one clear warning."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src", copy, ignore=shutil.ignore_patterns("_native*", "__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(copy)}
    env.pop("SESSIONIZER_CORE", None)
    run = [sys.executable, "-c", "from sessionizer.cli import main; raise SystemExit(main())"]
    version = subprocess.run(run + ["--version"], env=env, capture_output=True, text=True)
    assert version.stdout.startswith("sessionizer 0.1.0 (core: python (the compiled core cannot be loaded:")
    done = subprocess.run(run + ["replay", "--no-progress", "--config", str(CONFIG), "--output-dir",
                                 str(tmp_path / "out"), str(SAMPLE)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warning: the compiled core (sessionizer._native) cannot be loaded") == 1
    assert "pip install ." in done.stderr and "make wheel" in done.stderr
    host_replay(tmp_path / "host-out")
    assert_same_files(tmp_path / "out", tmp_path / "host-out")
    quiet = subprocess.run(run + ["replay", "--no-progress", "--config", str(CONFIG), "--output-dir",
                                  str(tmp_path / "out2"), str(SAMPLE)], env={**env, "SESSIONIZER_CORE": "python"},
                           capture_output=True, text=True)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr
