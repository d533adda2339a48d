"""Soak test: many jobs through `greenq run -c 4 -w 200` while a random
worker child is SIGKILLed every few seconds.

    python -m bench.soak [--jobs 1000000] [--kill-every 3] [-c 4] [-w 200]

Two throwaway redis-servers: the queue's (AOF on, as production would run
it) and a separate one for the side-effect record, so the queue server's
keys and memory at the end compare cleanly with its baseline.

Every job (params: its number n) marks its run in the record server with
one script call: SETBIT done n, and when the bit was already set, HINCRBY
dups n. At 1M jobs that is a 125 KB bitmap plus a small hash. At the end:

  lost        jobs whose bit is 0 (exit status 1 when any)
  duplicates  extra runs; each must be explained by a kill, so at most
              worker_count x kills (exit status 2 when more)
  RSS         of every worker child over its life (first/median/last)
  Redis       keys and memory of the queue server, end vs baseline

This file is also the task module `greenq run` loads, so it keeps its
top-level imports light; the driver imports the rest in main().
"""

from __future__ import annotations

import os
import random

import gevent
import redis

import greenq

RECORD_URL_ENV = "GREENQ_SOAK_RECORD_URL"
TASK_TIMEOUT = 3.0   # seconds: a killed child's jobs are retried this long after its last beat

# KEYS: done bitmap, dups hash; ARGV: job number. Returns the previous bit.
_RECORD_LUA = """
local old = redis.call('SETBIT', KEYS[1], ARGV[1], 1)
if old == 1 then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
return old
"""

_record = None


def _record_script():
    global _record
    if _record is None:
        # Bounded: 200 greenlets share a few connections instead of one each.
        pool = redis.BlockingConnectionPool.from_url(os.environ[RECORD_URL_ENV], max_connections=16,
                                                     timeout=30)
        _record = redis.Redis(connection_pool=pool).register_script(_RECORD_LUA)
    return _record


@greenq.task("soak.record", timeout=TASK_TIMEOUT)
def record(n):
    # A short, random wait: many jobs are mid-run when a kill lands.
    gevent.sleep(random.random() * 0.02)
    _record_script()(keys=["done", "dups"], args=[n])


# -- the driver ------------------------------------------------------------

NAMESPACE = "soak"
SUBMIT_CHUNK = 5000
LOOP_INTERVAL = 0.2  # seconds between the driver's rounds (progress, feed, RSS, kill)
RSS_INTERVAL = 1.0


def main(argv=None) -> int:
    import argparse
    import logging
    import signal
    import subprocess
    import sys

    from tqdm import tqdm

    from bench.redis_server import ThrowawayRedis

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--kill-every", type=float, default=3.0,
                        help="seconds between SIGKILLs of a random worker child (0: none)")
    parser.add_argument("-c", "--children", type=int, default=4)
    parser.add_argument("-w", "--workers", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=20_000,
                        help="keep at most about this many jobs queued (bounds Redis memory)")
    parser.add_argument("--retries", type=int, default=5,
                        help="retries per job: a kill counts as an attempt")
    parser.add_argument("--stall-timeout", type=float, default=120.0,
                        help="give up when no job finishes for this many seconds")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s bench[%(process)d] %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("bench.soak")
    rng = random.Random(args.seed)

    with ThrowawayRedis() as queue_server, ThrowawayRedis() as record_server:
        queue_redis = redis.Redis(host="127.0.0.1", port=queue_server.port)
        # ThrowawayRedis starts without persistence; the soak wants the AOF
        # write path a production server has.
        queue_redis.config_set("appendonly", "yes")
        queue_redis.config_set("appendfsync", "everysec")
        record_redis = redis.Redis(host="127.0.0.1", port=record_server.port)

        env = dict(os.environ, **{RECORD_URL_ENV: record_server.url})
        env.pop("GREENQ_REDIS_URL", None)
        env.pop("REDIS_URL", None)
        run_log = open(os.path.join(queue_server.dir, "greenq-run.log"), "w+b")
        master = subprocess.Popen(
            [sys.executable, "-m", "greenq", "run", os.path.abspath(__file__),
             "-c", str(args.children), "-w", str(args.workers), "--flush-stale-timeout", "1",
             "--redis-url", queue_server.url, "--namespace", NAMESPACE, "--log-level", "WARNING"],
            stdout=run_log, stderr=subprocess.STDOUT, env=env)
        soak = Soak(args, rng, log, master, queue_server.url, queue_redis, record_redis)
        try:
            soak.wait_for_children()
            baseline = soak.redis_footprint()
            soak.drive(tqdm(total=args.jobs, unit="job", smoothing=0.1, mininterval=1.0))
        finally:
            if master.poll() is None:
                master.send_signal(signal.SIGTERM)
                try:
                    master.wait(60)
                except subprocess.TimeoutExpired:
                    run_log.seek(0)
                    tail = run_log.read().decode(errors="replace").splitlines()[-40:]
                    log.warning("greenq run did not stop within 60 s of SIGTERM; killing it. "
                                "Its processes: %s. The last lines of its log:\n%s",
                                _process_tree(master.pid), "\n".join(tail))
                    master.kill()
                    master.wait(10)
        end = soak.redis_footprint()
        run_log.seek(0)
        errors = [line for line in run_log.read().decode(errors="replace").splitlines()
                  if " ERROR " in line or "Traceback" in line]
        return soak.report(baseline, end, master.returncode, errors)


def _process_tree(pid: int) -> str:
    """`pid` and its children, each with its state and command line (ps)."""
    import subprocess

    try:
        return subprocess.run(["ps", "-o", "pid,ppid,stat,etime,args", "--ppid", str(pid), "-p", str(pid)],
                              capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"(ps failed: {exc})"


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _children_of(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == parent:
            pids.append(int(entry))
    return pids


def _median(values: list) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


class Soak:
    def __init__(self, args, rng, log, master, queue_url, queue_redis, record_redis) -> None:
        from greenq import GreenQueue

        self.args, self.rng, self.log = args, rng, log
        self.master = master
        self.queue_redis, self.record_redis = queue_redis, record_redis
        self.queue = GreenQueue(redis_url=queue_url, namespace=NAMESPACE)
        self.prefix = self.queue.keys.prefix
        self.submitted = 0
        self.kills: list[tuple[int, int]] = []  # (pid, jobs Redis said it owned just before)
        self.rss: dict[int, list[int]] = {}     # child pid -> VmRSS kB samples
        self.master_rss: list[int] = []
        self.seconds = 0.0
        self.failed_submits = 0

    # -- the worker children, seen from outside ----------------------------------

    def live_workers(self) -> dict[int, str]:
        """pid -> greenq process id of children that are up and heartbeating."""
        by_pid = {}
        for proc in self.queue_redis.hkeys(self.prefix + "beats"):
            proc = proc.decode()
            parts = proc.split(":")
            if len(parts) >= 3 and parts[-2].isdigit():
                by_pid[int(parts[-2])] = proc
        return {pid: by_pid[pid] for pid in _children_of(self.master.pid) if pid in by_pid}

    def wait_for_children(self, timeout: float = 60.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        wanted = self.args.children
        while len(_children_of(self.master.pid)) < wanted or self._idle_beats() < wanted:
            if self.master.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("greenq run did not bring its children up")
            time.sleep(0.1)

    def _idle_beats(self) -> int:
        # Idle children heartbeat only while they hold jobs; their fetch
        # loop is up once their connection shows BLMOVE.
        clients = self.queue_redis.client_list()
        return sum(1 for c in clients if c.get("cmd") == "blmove")

    def kill_one(self) -> None:
        workers = self.live_workers()
        if not workers:
            return
        pid = self.rng.choice(sorted(workers))
        owned = self.queue_redis.zcard(f"{self.prefix}owned:{workers[pid]}")
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            return
        self.kills.append((pid, owned))

    def sample_rss(self) -> None:
        # Ready children only: a booting interpreter's RSS is not a baseline.
        for pid in self.live_workers():
            kb = _rss_kb(pid)
            if kb is not None:
                self.rss.setdefault(pid, []).append(kb)
        kb = _rss_kb(self.master.pid)
        if kb is not None:
            self.master_rss.append(kb)

    # -- the run ------------------------------------------------------------------

    def feed(self) -> None:
        stats = self.queue.stats()
        queued = stats["pending"] + stats["waiting"]
        if self.submitted >= self.args.jobs or queued > self.args.backlog // 2:
            return
        room = min(self.args.backlog - queued, self.args.jobs - self.submitted)
        while room > 0:
            count = min(room, SUBMIT_CHUNK)
            first = self.submitted
            self.queue.submit_jobs(
                {"task_id": "soak.record", "params": n, "retries": self.args.retries}
                for n in range(first, first + count))
            self.submitted += count
            room -= count

    def drive(self, progress) -> None:
        import time

        started = last_progress_at = time.monotonic()
        next_kill = started + self._kill_gap()
        next_rss = started
        done = 0
        with progress:
            while True:
                now = time.monotonic()
                if self.master.poll() is not None:
                    self.log.error("greenq run exited with status %s mid-soak",
                                   self.master.returncode)
                    break
                self.feed()
                if now >= next_rss:
                    self.sample_rss()
                    next_rss = now + RSS_INTERVAL
                if self.args.kill_every > 0 and now >= next_kill and done < self.args.jobs:
                    self.kill_one()
                    next_kill = now + self._kill_gap()
                count = self.record_redis.bitcount("done")
                if count > done:
                    progress.update(count - done)
                    done, last_progress_at = count, now
                progress.set_postfix(kills=len(self.kills), submitted=self.submitted, refresh=False)
                if done >= self.args.jobs and self._settled():
                    break
                if now - last_progress_at > self.args.stall_timeout:
                    self.log.error("no job finished for %.0f s: giving up", self.args.stall_timeout)
                    break
                time.sleep(LOOP_INTERVAL)
        self.seconds = time.monotonic() - started

    def _kill_gap(self) -> float:
        return self.args.kill_every * self.rng.uniform(0.5, 1.5)

    def _settled(self) -> bool:
        stats = self.queue.stats()
        return stats["pending"] == stats["active"] == stats["waiting"] == 0

    # -- the verdict -------------------------------------------------------------

    def redis_footprint(self) -> dict:
        info = self.queue_redis.info("memory")
        return {"keys": self.queue_redis.dbsize(), "used_memory": info["used_memory"],
                "names": sorted(k.decode(errors="replace")
                                for k in self.queue_redis.scan_iter(count=1000))[:20]}

    def report(self, baseline: dict, end: dict, run_status: int | None, errors: list[str]) -> int:
        jobs = self.args.jobs
        bitmap = self.record_redis.get("done") or b""
        lost = [n for n in range(jobs)
                if n // 8 >= len(bitmap) or not bitmap[n // 8] & (0x80 >> (n % 8))]
        extra_runs = sum(int(v) for v in self.record_redis.hvals("dups"))
        jobs_run_twice = self.record_redis.hlen("dups")
        failed = self.queue_redis.llen(self.prefix + "failed")
        bound = self.args.workers * len(self.kills)
        owned_at_kills = sum(owned for _, owned in self.kills)

        out = print
        out(f"\nsoak: {jobs} jobs, -c {self.args.children} -w {self.args.workers}, "
            f"a kill every ~{self.args.kill_every:g} s, {self.seconds:.0f} s "
            f"({jobs / max(self.seconds, 1e-9):.0f} jobs/s)")
        out(f"submitted: {self.submitted}")
        out(f"lost: {len(lost)}" + (f"  (first: {lost[:10]})" if lost else ""))
        out(f"kills: {len(self.kills)}  (jobs the killed children held in Redis: {owned_at_kills})")
        out(f"duplicates: {extra_runs} extra runs of {jobs_run_twice} jobs  "
            f"(bound: {self.args.workers} workers x {len(self.kills)} kills = {bound}; "
            f"{'explained by kills' if extra_runs <= bound else 'NOT EXPLAINED BY KILLS'})")
        out(f"failed queue: {failed}")
        out(f"greenq run exit status: {run_status}; error lines in its log: {len(errors)}")
        for line in errors[:5]:
            out(f"  {line[:200]}")
        out("worker child RSS (MB), first / median / last sample, longest-lived first:")
        lives = sorted(self.rss.items(), key=lambda item: -len(item[1]))
        for pid, samples in lives[:8]:
            out(f"  pid {pid:>7}  {len(samples):>5} samples  {samples[0] / 1024:7.1f} / "
                f"{_median(samples) / 1024:7.1f} / {samples[-1] / 1024:7.1f}")
        if lives:
            firsts = [s[0] for _, s in lives]
            lasts = [s[-1] for _, s in lives]
            out(f"  all {len(lives)} children: median first {_median(firsts) / 1024:.1f}, "
                f"median last {_median(lasts) / 1024:.1f}, "
                f"max {max(max(s) for _, s in lives) / 1024:.1f}")
        if self.master_rss:
            m = self.master_rss
            out(f"  master: {m[0] / 1024:.1f} / {_median(m) / 1024:.1f} / {m[-1] / 1024:.1f}")
        out(f"queue Redis keys: baseline {baseline['keys']}, end {end['keys']}  "
            f"(end: {end['names']})")
        out(f"queue Redis used_memory: baseline {baseline['used_memory'] / 1024 / 1024:.2f} MB, "
            f"end {end['used_memory'] / 1024 / 1024:.2f} MB")
        if lost:
            return 1
        if extra_runs > bound:
            return 2
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
