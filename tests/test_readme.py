"""The README's synopsis, run as written against the test Redis."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synopsis_blocks() -> list[str]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as readme:
        text = readme.read()
    section = text.split("## Synopsis", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_synopsis_program_sees_its_job_end_every_time(tmp_path, redis_url, namespace):
    task, program = synopsis_blocks()[:2]
    assert "make_thumbnail" in task and "q.shutdown()" in program
    # The task as the README writes it, with a make_thumbnail that touches the file.
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "thumbnail.py").write_text(
        "import pathlib\n\n\ndef make_thumbnail(path):\n"
        "    pathlib.Path(path).with_suffix('.thumb').touch()\n\n\n" + task)
    (tmp_path / "synopsis.py").write_text(
        program.replace("/img/42.png", str(tmp_path / "42.png")).replace(
            "GreenQueue(worker_count=200)", f"GreenQueue(worker_count=200, namespace={namespace!r})"))
    env = dict(os.environ, GREENQ_REDIS_URL=redis_url)
    for run in range(5):
        result = subprocess.run([sys.executable, "synopsis.py"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(r"done \S+\n", result.stdout), (run, result.stdout, result.stderr)
    assert (tmp_path / "42.thumb").exists()
