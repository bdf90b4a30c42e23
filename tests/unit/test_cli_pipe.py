"""`netlab ... | head` ends quietly: a reader that goes away is no error to report
(Python's documented way for SIGPIPE, once in cli.main for every command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# the real main() and a real pipe; `version` stands in for any command that prints a lot
COMMAND = """
import sys
from netlab import cli

def many(args):
    for i in range(200000):
        print(f"line {i}")
    return 0

def other_pipe(args):  # a BrokenPipeError that is not about stdout
    raise BrokenPipeError(32, "Broken pipe (a socket)")

cli.cmd_version = many if sys.argv[1] == "many" else other_pipe
sys.exit(cli.main(["version"]))
"""


def sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        timeout=60,
        check=False,
    )


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path):
    script = tmp_path / "cmd.py"
    script.write_text(COMMAND)
    done = sh(f"{sys.executable} {script} many | head -n 2; echo status ${{PIPESTATUS[0]}}")
    assert done.stdout == "line 0\nline 1\nstatus 141\n"
    assert done.stderr == ""  # no BrokenPipeError traceback, none at exit either


def test_a_broken_pipe_elsewhere_is_still_an_error(tmp_path):
    script = tmp_path / "cmd.py"
    script.write_text(COMMAND)
    done = sh(f"{sys.executable} {script} other | cat")
    assert "BrokenPipeError" in done.stderr and "a socket" in done.stderr
