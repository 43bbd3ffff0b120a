#!/usr/bin/env python3
"""Time a command N times (wall clock of the whole process) and report its peak RSS.

Usage: timeit.py [--repeat N] [--prepare SHELL_CMD] [--cwd DIR] -- CMD [ARGS...]

Before every run, PREPARE (if given) runs through bash and is not timed (e.g. wipe a store).
Each run's wall time is measured with time.perf_counter around fork/exec/wait; its peak RSS is
the child's ru_maxrss from wait4(2) (the figure GNU `/usr/bin/time -v` prints as "Maximum
resident set size"). The command's stdout/stderr are discarded; a non-zero exit aborts with
its stderr.

Prints one line: `median_s min_s max_s peak_rss_kib runs` (peak RSS: maximum over the runs).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--prepare", default=None)
    ap.add_argument("--cwd", default=None)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        ap.error("no command")
    times, rss = [], 0
    for _ in range(a.repeat):
        if a.prepare:
            subprocess.run(["bash", "-c", a.prepare], cwd=a.cwd, check=True)
        with tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, cwd=a.cwd, stdout=subprocess.DEVNULL, stderr=err)
            _, status, ru = os.wait4(p.pid, 0)
            dt = time.perf_counter() - t0
            p.returncode = os.waitstatus_to_exitcode(status)
            if p.returncode != 0:
                err.seek(0)
                sys.stderr.write(err.read().decode(errors="replace")[-4000:])
                sys.exit(f"timeit: {' '.join(cmd)} exited with {p.returncode}")
        times.append(dt)
        rss = max(rss, ru.ru_maxrss)
    times.sort()
    print(f"{times[len(times) // 2]:.4f} {times[0]:.4f} {times[-1]:.4f} {rss} {len(times)}")


if __name__ == "__main__":
    main()
