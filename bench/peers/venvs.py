"""One virtualenv per peer under .bench/venvs/<peer>, with the pinned
versions of bench/peers/requirements/<peer>.txt. Built on first use and
again whenever that file changes (a stamp in the venv holds its hash)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys

log = logging.getLogger("bench.peers.venvs")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENVS = os.path.join(ROOT, ".bench", "venvs")
REQUIREMENTS = os.path.join(ROOT, "bench", "peers", "requirements")
INSTALL_TIMEOUT = 900.0  # seconds; a cold install of Celery + gevent takes a minute or two
STAMP = ".bench-requirements.sha256"


class VenvError(RuntimeError):
    """Raised when a peer's virtualenv cannot be built."""


def requirements_file(peer: str) -> str:
    return os.path.join(REQUIREMENTS, f"{peer}.txt")


def python_of(peer: str) -> str:
    return os.path.join(VENVS, peer, "bin", "python")


def ensure(peer: str) -> str:
    """The python of the peer's virtualenv, built first if it is missing or stale."""
    requirements = requirements_file(peer)
    if not os.path.exists(requirements):
        raise VenvError(f"no requirements file {requirements}")
    with open(requirements, "rb") as pinned:
        digest = hashlib.sha256(pinned.read()).hexdigest()
    venv = os.path.join(VENVS, peer)
    stamp = os.path.join(venv, STAMP)
    if os.path.exists(stamp) and os.path.exists(python_of(peer)):
        with open(stamp) as existing:
            if existing.read().strip() == digest:
                return python_of(peer)
    log.info("building the %s virtualenv in %s", peer, venv)
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", venv], f"{peer}: python -m venv")
    run([python_of(peer), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", requirements], f"{peer}: pip install -r {os.path.relpath(requirements, ROOT)}")
    with open(stamp, "w") as out:
        out.write(digest + "\n")
    return python_of(peer)


def run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise VenvError(f"{what} took longer than {INSTALL_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if not line.startswith("WARNING")]
        raise VenvError(f"{what} failed ({done.returncode}): {' | '.join(errors[-5:])}")
