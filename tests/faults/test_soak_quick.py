"""bench/soak.py in small: 2,000 jobs through `greenq run -c 4 -w 200` with a
worker child SIGKILLed about every second; nothing may be lost, and every
duplicate run must be explained by a kill (the soak's exit status)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.timeout(300)
def test_a_short_soak_with_child_kills_loses_no_job():
    env = {k: v for k, v in os.environ.items() if k not in ("GREENQ_REDIS_URL", "REDIS_URL")}
    result = subprocess.run([sys.executable, "-m", "bench.soak", "--jobs", "2000",
                             "--kill-every", "1", "--stall-timeout", "60"],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=280)

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "\nlost: 0\n" in result.stdout, result.stdout
    assert "explained by kills" in result.stdout and "NOT EXPLAINED" not in result.stdout
    assert "failed queue: 0" in result.stdout
