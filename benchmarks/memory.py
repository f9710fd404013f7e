"""Memory benchmark: the peak memory of a whole ``polydiff fit`` run, summed over its processes.

    python benchmarks/memory.py                                  # the whole default fit (9.5 minutes)
    python benchmarks/memory.py --max_steps 30 --val_check_interval 20 -- --data.num_workers 0

Runs ``polydiff fit -c recipes/base.yaml`` (plus any arguments after ``--``) in a subprocess,
as the recipe sets it or shortened. A shortened run (``--val_check_interval``) samples at every
validation (``--model.sample_every_n_validations 1``): the recipe samples 200 molecules and
scores their novelty at every 4th, which the whole fit reaches and a short run would not. It reads every
``--interval`` seconds the memory of the run's process tree (the main process and its data
loader workers) from ``/proc``. Prints JSON: the peak of the sum over processes of the
proportional set size (PSS: shared pages split between the processes that map them, so memory
the workers share with the main process counts once), the same for the resident set size (RSS,
which counts shared pages in every process), each process's own peak, and the optimizer steps
trained (a memory setting that slows the steps trains fewer in the recipe's time budget) and
the allocator the fit ran with. The run inherits the environment: ``polydiff`` runs under
jemalloc where the system has it (``polydiff.utils.allocator``), and glibc's malloc is measured with

    POLYDIFF_ALLOCATOR=system python benchmarks/memory.py

Linux only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from polydiff.commands import positive, user_errors

BASE = Path(__file__).parents[1] / "recipes" / "base.yaml"


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(kid) for kid in task.read_text().split()]
            except OSError:
                continue
            found += kids
            frontier += kids
    return found


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(PSS, RSS) of one process in MB, or None once it has gone."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    except (OSError, ValueError):
        return None
    return int(fields["Pss"].split()[0]) / 1024, int(fields["Rss"].split()[0]) / 1024


def allocator(pid: int) -> str | None:
    """``jemalloc`` or ``system``: what the process ``pid`` allocates with (None once it has gone)."""
    try:
        return "jemalloc" if "libjemalloc" in Path(f"/proc/{pid}/maps").read_text() else "system"
    except OSError:
        return None


def _steps_trained(root: Path) -> int | None:
    """The optimizer steps of the run's newest last.ckpt under ``root`` (None if it wrote none):
    an allocator that saves memory but slows the steps shows here as fewer steps in the budget."""
    checkpoints = sorted(root.rglob("last.ckpt"), key=lambda path: path.stat().st_mtime)
    return torch.load(checkpoints[-1], map_location="cpu", weights_only=True)["global_step"] if checkpoints else None


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to polydiff fit as they are. POLYDIFF_ALLOCATOR=system measures the fit "
        "under glibc's malloc instead of jemalloc.",
    )
    parser.add_argument("--config", default=str(BASE), help="the recipe to fit (default: recipes/base.yaml)")
    parser.add_argument("--max_steps", type=positive(int), default=None, help="default: the recipe's")
    parser.add_argument("--val_check_interval", type=positive(int), default=None, help="default: the recipe's")
    parser.add_argument("--interval", type=positive(float), default=0.25, help="seconds between samples")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    with tempfile.TemporaryDirectory() as root:
        command = [sys.executable, "-m", "polydiff", "fit", "-c", args.config, "--trainer.default_root_dir", root]
        for option in ("max_steps", "val_check_interval"):
            if getattr(args, option) is not None:
                command += [f"--trainer.{option}", str(getattr(args, option))]
        if args.val_check_interval is not None:  # its validations sample, as the whole fit's every 4th does
            command += ["--model.sample_every_n_validations", "1"]
        command += extra
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak_pss = peak_rss = 0.0
        per_process: dict[int, float] = {}
        used = None
        while process.poll() is None:
            if used is None and time.perf_counter() - start > 2:  # past the start (and its run again under jemalloc)
                used = allocator(process.pid)
            readings = {pid: memory_mb(pid) for pid in [process.pid, *children(process.pid)]}
            readings = {pid: reading for pid, reading in readings.items() if reading is not None}
            peak_pss = max(peak_pss, sum(pss for pss, _ in readings.values()))
            peak_rss = max(peak_rss, sum(rss for _, rss in readings.values()))
            for pid, (pss, _) in readings.items():
                per_process[pid] = max(per_process.get(pid, 0.0), pss)
            time.sleep(args.interval)
        error = process.stderr.read()
        steps = _steps_trained(Path(root))
    if process.returncode:
        sys.exit(f"polydiff fit failed ({process.returncode}):\n{error[-2000:]}")
    main_pid = process.pid
    others = sorted((round(peak) for pid, peak in per_process.items() if pid != main_pid), reverse=True)
    print(json.dumps({
        "command": " ".join(command[1:]),
        "seconds": round(time.perf_counter() - start, 1),
        "steps": steps,
        "allocator": used,
        "peak_pss_mb": round(peak_pss),
        "peak_rss_mb": round(peak_rss),
        "main_process_peak_pss_mb": round(per_process.get(main_pid, 0.0)),
        "other_processes_peak_pss_mb": others,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    with user_errors("benchmarks/memory.py"):
        main()
