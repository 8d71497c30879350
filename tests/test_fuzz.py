"""Fuzz: hostile header fields and corrupted JPEG 2000 codestreams through the commands.

A seeded corpus (``tests/_fuzz_driver.py``: 36 films with hostile header
values, cut or flipped header bytes, and 12 corrupted codestreams of
pydicom-data's RG3_J2KR.dcm) goes through ``vheight info``, ``measure`` and
``report`` in one subprocess under an address-space limit and a timeout.
Every command must exit 0 or 1, with exactly one line on stderr when it
fails, no traceback, and within a bounded time.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

ROOT = Path(__file__).resolve().parents[1]
MEMORY = 4 << 30  # bytes of address space for the whole corpus
PER_COMMAND_SECONDS = 20


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


@pytest.mark.parametrize("seed", [19])
def test_commands_hold_under_a_seeded_fuzz_corpus(tmp_path, seed):
    if get_testdata_file("RG3_J2KR.dcm") is None:
        pytest.skip("pydicom-data's RG3_J2KR.dcm is not installed")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "_fuzz_driver.py"), str(tmp_path), str(seed)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=_limit,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) >= 36 * 2 + 12 * 3
    problems = []
    for record in records:
        where = f"{record['case']} | {' '.join(record['argv'][:1])}"
        lines = record["stderr"].strip().splitlines()
        if record["escaped"]:
            problems.append(f"{where}: escaped\n{record['escaped']}")
        elif record["exit"] not in (0, 1):
            problems.append(f"{where}: exit {record['exit']}")
        elif "Traceback" in record["stderr"]:
            problems.append(f"{where}: traceback on stderr")
        elif record["exit"] == 1 and len(lines) != 1:
            problems.append(f"{where}: {len(lines)} stderr lines: {lines}")
        elif record["seconds"] > PER_COMMAND_SECONDS:
            problems.append(f"{where}: {record['seconds']:.1f} s")
    assert not problems, "\n".join(problems)
    failed = [r for r in records if r["exit"] == 1]
    assert failed and len(failed) < len(records)  # the corpus exercises both outcomes
