"""`netlab kubeconfig`: the lab's admin key never lands in a file others may read,
whether written with -o FILE or by the shell's `> FILE` (umask 022)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from netlab import cli
from netlab.privatefile import write_private

KUBECONFIG = (
    "apiVersion: v1\nkind: Config\nusers: [{name: admin, user: {client-key-data: c2VjcmV0}}]\n"
)

# runs the real command with its run directory moved (no lab needed: it reads a file)
COMMAND = (
    "import pathlib, sys; from netlab import cli; cli.RUN_ROOT = pathlib.Path(sys.argv[1]); "
    "sys.exit(cli.main(['--lab', 'tk', 'kubeconfig', *sys.argv[2:]]))"
)


@pytest.fixture
def run_root(tmp_path, monkeypatch):
    root = tmp_path / "run"
    (root / "tk").mkdir(parents=True)
    (root / "tk" / "kubeconfig").write_text(KUBECONFIG)
    monkeypatch.setattr(cli, "RUN_ROOT", root)
    return root


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def shell(run_root, redirect: str, *args: str) -> subprocess.CompletedProcess:
    argv = " ".join([sys.executable, "-c", f'"{COMMAND}"', str(run_root), *args])
    return subprocess.run(
        ["sh", "-c", f"umask 022; {argv} {redirect}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        timeout=30,
        check=False,
    )


def test_output_file_is_0600_whatever_the_umask(run_root, tmp_path, capsys):
    out = tmp_path / "lab.kubeconfig"
    old = os.umask(0o022)
    try:
        assert cli.main(["--lab", "tk", "kubeconfig", "-o", str(out)]) == 0
    finally:
        os.umask(old)
    assert out.read_text() == KUBECONFIG and mode(out) == 0o600
    assert "export KUBECONFIG=" in capsys.readouterr().out


def test_an_existing_readable_file_is_tightened_and_replaced(tmp_path):
    out = tmp_path / "lab.kubeconfig"
    out.write_text("an older, longer kubeconfig " * 20)
    out.chmod(0o644)
    write_private(out, KUBECONFIG)
    assert out.read_text() == KUBECONFIG and mode(out) == 0o600


def test_a_symlink_is_not_written_through(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        write_private(tmp_path / "link", KUBECONFIG)
    assert target.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_under_sudo_a_new_file_belongs_to_the_user_who_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("SUDO_UID", "65534")
    monkeypatch.setenv("SUDO_GID", "65534")
    write_private(tmp_path / "new", KUBECONFIG)
    assert os.stat(tmp_path / "new").st_uid == 65534 and mode(tmp_path / "new") == 0o600
    (tmp_path / "mine").write_text("")
    write_private(tmp_path / "mine", KUBECONFIG)
    assert os.stat(tmp_path / "mine").st_uid == os.geteuid()  # an existing file keeps its owner


def test_a_redirected_stdout_is_tightened(run_root, tmp_path):
    out = tmp_path / "by-shell.kubeconfig"
    done = shell(run_root, f"> {out}")
    assert done.returncode == 0, done.stderr
    assert out.read_text() == KUBECONFIG and mode(out) == 0o600
    assert "was readable by other users (mode 0644); made it 0600" in done.stderr


def test_a_pipe_is_left_alone(run_root):
    done = shell(run_root, "| cat")
    assert done.returncode == 0 and done.stdout == KUBECONFIG and done.stderr == ""


def test_a_missing_directory_is_said_plainly(run_root, tmp_path, capsys):
    assert cli.main(["--lab", "tk", "kubeconfig", "-o", str(tmp_path / "no" / "f")]) == 1
    assert "cannot write the kubeconfig" in capsys.readouterr().err
