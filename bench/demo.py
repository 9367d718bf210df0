"""CPU of ``hopscope demo`` at its default rate: the whole process tree's CPU seconds per wall second.

The demo runs for ``--duration`` seconds. The total is exact: the CPU time (user + system) of every process
of the tree once they have all exited and been waited for (``getrusage(RUSAGE_CHILDREN)`` of this process,
before and after). The breakdown per process comes from psutil samples every second (their last value, so
it misses up to a second of each). The budget is one core; printed: cores used, and the ratio to it.

    .venv/bin/python bench/demo.py [--duration 60] [--rate 5] [--dashboard]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqs_poll import free_port

HOPSCOPE = str(Path(sys.executable).with_name("hopscope"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument(
        "--dashboard", action="store_true", help="run the dashboard too (idle: nobody browses)"
    )
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="hopscope-bench-"))
    command = [
        HOPSCOPE, "demo", "--duration", str(args.duration), "--rate", str(args.rate),
        "--db", str(directory / "demo.db"), "--moto-port", str(free_port()),
        "--collector-port", str(free_port()), "--dashboard-port", str(free_port()),
    ]  # fmt: skip
    if not args.dashboard:
        command.append("--no-dashboard")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    names: dict[int, str] = {}
    while proc.poll() is None:
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for process in processes:
            try:
                times = process.cpu_times()
                cpu[process.pid] = times.user + times.system
                names.setdefault(process.pid, " ".join(process.cmdline()[1:4])[:60])
            except psutil.NoSuchProcess:
                continue
        time.sleep(1)
    proc.wait()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(directory, ignore_errors=True)
    total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"demo at {args.rate:g} orders/s for {args.duration} s (wall {wall:.0f} s, exit {proc.returncode})")
    for pid, seconds in sorted(cpu.items(), key=lambda item: -item[1])[:10]:
        print(f"  {seconds:7.1f} s  {names.get(pid) or pid}")
    cores = total / wall
    print(f"CPU: {total:.1f} s over {wall:.0f} s = {cores:.2f} cores; ratio to the 1-core budget {cores:.2f} "
          f"({'PASS' if cores < 1 else 'MISS'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
