"""Run every script in ``examples/`` and compare what it prints with its saved output.

Each ``examples/NAME.py`` has an ``examples/NAME.out.txt`` holding its expected standard
output. UUIDs and timings differ from run to run, so both sides are normalised before the
comparison. To re-record the expected output after a deliberate change, run
``python -m tests.test_examples --regen`` from the repository root and review the diff.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
RUN_TIMEOUT = 90.0

_NORMALISERS = [
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<UUID>",
    ),
    # Durations such as "0.012s", "1.5 ms", "250us", "3 seconds".
    (
        re.compile(r"\b\d+(?:\.\d+)?(?:e-?\d+)?\s?(?:s|sec|secs|seconds?|ms|us|µs|ns)\b"),
        "<TIME>",
    ),
    # Memory addresses in reprs, e.g. "at 0x7f3a2c1d9e50".
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<ADDR>"),
]


def normalise(text: str) -> str:
    """Return ``text`` with run-dependent values replaced and trailing whitespace removed."""
    for pattern, replacement in _NORMALISERS:
        text = pattern.sub(replacement, text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"


def _subprocess_env() -> dict[str, str]:
    """The environment for an example: it must import the same flowkit as this test does."""
    import flowkit

    source_root = str(Path(flowkit.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([source_root, *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONWARNINGS", None)
    return env


def run_example(script: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run one example script to completion with the current interpreter."""
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def test_examples_exist() -> None:
    expected = {
        "hello_world",
        "data_passing",
        "graph_flow_deciders",
        "parallel_fanout",
        "reverting",
        "retry_controllers",
        "suspend_resume",
        "order_saga",
        "listeners",
        "graph_export",
        "approval",
    }
    assert expected <= {script.stem for script in EXAMPLES}


def test_normalise_replaces_run_dependent_values() -> None:
    text = "flow 3f2b8c1e-1d2a-4c3b-9a8f-0123456789ab took 0.25s (12 ms) \n"
    assert normalise(text) == "flow <UUID> took <TIME> (<TIME>)\n"
    assert normalise("attempt 3 of 5, 2 tasks\n") == "attempt 3 of 5, 2 tasks\n"


@pytest.mark.examples
@pytest.mark.parametrize("script", EXAMPLES, ids=[script.stem for script in EXAMPLES])
def test_example_output_matches_saved(script: Path, tmp_path: Path) -> None:
    expected_file = script.with_suffix(".out.txt")
    assert expected_file.exists(), f"{script.name} has no saved output {expected_file.name}"

    proc = run_example(script, tmp_path)

    assert proc.returncode == 0, (
        f"{script.name} exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    expected = normalise(expected_file.read_text(encoding="utf-8"))
    assert normalise(proc.stdout) == expected, f"--- stderr ---\n{proc.stderr}"


def _regenerate() -> int:
    """Re-record every example's expected output from a fresh run."""
    import tempfile

    status = 0
    for script in EXAMPLES:
        with tempfile.TemporaryDirectory() as tmp:
            proc = run_example(script, Path(tmp))
        if proc.returncode != 0:
            print(f"FAILED {script.name}:\n{proc.stderr}", file=sys.stderr)
            status = 1
            continue
        script.with_suffix(".out.txt").write_text(proc.stdout, encoding="utf-8")
        print(f"recorded {script.with_suffix('.out.txt').name}")
    return status


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit("usage: python -m tests.test_examples --regen")
    sys.exit(_regenerate())
