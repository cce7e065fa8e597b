"""Shared helpers for the benchmark scripts: quiet-machine check, timing, output.

Absolute times on a small shared CPU are noise; every benchmark reports *ratios* of
measurements taken in the same process, interleaved (A B A B ...) so that drift in the
machine's load hits both sides alike, each the median of a few repeats after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "src" / "steerlab" / "data" / "prompts"


def contrast_pairs(n: int = 64) -> tuple[list[str], list[str]]:
    """The first ``n`` happy/sad prompts shipped with steerlab: ``n`` contrast pairs."""
    happy = json.loads((PROMPTS / "happy.json").read_text())[:n]
    sad = json.loads((PROMPTS / "sad.json").read_text())[:n]
    if len(happy) < n or len(sad) < n:
        raise SystemExit(f"need {n} happy and {n} sad prompts, found {len(happy)} and {len(sad)}")
    return happy, sad


# ---------------------------------------------------------------------------------------------
# Machine load
# ---------------------------------------------------------------------------------------------


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts), idle


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def busy_cores(seconds: float = 1.0) -> float:
    """Cores kept busy by *other* processes over ``seconds`` (we sleep meanwhile)."""
    tot0, idle0 = _cpu_times()
    own0 = _own_cpu()
    time.sleep(seconds)
    tot1, idle1 = _cpu_times()
    own1 = _own_cpu()
    hz = os.sysconf("SC_CLK_TCK")
    busy_ticks = (tot1 - tot0) - (idle1 - idle0)
    own_ticks = (own1 - own0) * hz
    elapsed_ticks = seconds * hz
    return max(0.0, (busy_ticks - own_ticks) / elapsed_ticks)


class LoadMonitor:
    """Keeps timings clean of other processes on this small machine, and records what it saw.

    Before each timed call it waits (up to ``max_wait_s``) until the other cores are idle;
    during the call it measures how much CPU *other* processes used, and a call during which
    they averaged more than ``threshold`` cores is thrown away and run again. After
    ``max_total_wait_s`` of waiting in all it stops waiting and keeps what it gets, flagged.
    """

    def __init__(self, max_wait_s: float = 120.0, threshold: float = 0.25,
                 max_total_wait_s: float | None = None) -> None:
        self.max_wait_s = max_wait_s
        self.threshold = threshold
        self.max_total_wait_s = 5 * max_wait_s if max_total_wait_s is None else max_total_wait_s
        self.samples: list[dict[str, Any]] = []
        self.waited_s = 0.0
        self.gave_up = 0
        self.rejected = 0
        self.kept_busy = 0
        self.during: list[float] = []

    @property
    def exhausted(self) -> bool:
        return self.waited_s >= self.max_total_wait_s

    def wait_quiet(self, label: str = "", say: Callable[[str], None] | None = None) -> float:
        """Return the busy-core figure seen last; wait (up to max_wait_s) while it is high."""
        t0 = time.perf_counter()
        warned = False
        while True:
            b = busy_cores(0.5)
            if b <= self.threshold:
                break
            if self.exhausted or time.perf_counter() - t0 > self.max_wait_s:
                self.gave_up += 1
                if say:
                    say(f"  ! {b:.2f} other cores busy; waited long enough, timing {label} "
                        "anyway (figures may be noisy)")
                break
            if say and not warned:
                say(f"  ... another process keeps {b:.2f} cores busy; waiting before {label}")
                warned = True
            time.sleep(2.0)
        self.waited_s += time.perf_counter() - t0
        self.samples.append({"label": label, "busy_other_cores": round(b, 3),
                             "loadavg_1m": round(os.getloadavg()[0], 2)})
        return b

    def measure(self, fn: Callable[[], Any], label: str = "",
                say: Callable[[str], None] | None = None, max_tries: int = 6) -> float:
        """Seconds one call of ``fn`` takes while no other process competes for the CPU."""
        for attempt in range(max_tries):
            self.wait_quiet(label, None if attempt else say)
            t0 = time.perf_counter()
            dt, others = time_with_load(fn)
            if others <= self.threshold or self.exhausted or attempt == max_tries - 1:
                if others > self.threshold:
                    self.kept_busy += 1
                    if say:
                        say(f"  ! kept a noisy run of {label}: {others:.2f} other cores busy")
                self.during.append(round(others, 3))
                return dt
            self.rejected += 1
            self.waited_s += time.perf_counter() - t0
            if say:
                say(f"  ... {label}: {others:.2f} other cores were busy during the run; redo")
        raise AssertionError("unreachable")

    def summary(self) -> dict[str, Any]:
        busy = [s["busy_other_cores"] for s in self.samples]
        return {
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "busy_other_cores_before_runs_max": max(busy) if busy else None,
            "busy_other_cores_during_kept_runs_max": max(self.during) if self.during else None,
            "busy_other_cores_during_kept_runs_median":
                statistics.median(self.during) if self.during else None,
            "threshold_cores": self.threshold,
            "runs_redone_for_load": self.rejected,
            "noisy_runs_kept": self.kept_busy,
            "waited_for_quiet_s": round(self.waited_s, 1),
            "clean": self.kept_busy == 0,
        }

    def warn_if_noisy(self) -> None:
        """Say loudly when some kept runs were timed while other processes competed."""
        if self.kept_busy:
            print(f"\n!! {self.kept_busy} timed run(s) were kept although other processes "
                  "competed for the CPU (waited as long as allowed): the ratios above are noise; "
                  "rerun on a quiet machine or with a larger --max-wait.")


def time_with_load(fn: Callable[[], Any]) -> tuple[float, float]:
    """(seconds, average number of cores other processes kept busy meanwhile)."""
    tot0, idle0 = _cpu_times()
    own0 = _own_cpu()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    tot1, idle1 = _cpu_times()
    own1 = _own_cpu()
    hz = os.sysconf("SC_CLK_TCK")
    others = ((tot1 - tot0) - (idle1 - idle0) - (own1 - own0) * hz) / max(dt * hz, 1e-9)
    return dt, max(0.0, others)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def concurrently(fn: Callable[[int], Any], n: int) -> float:
    """Run ``fn(0) .. fn(n - 1)`` in ``n`` threads at once (clients); wall seconds until all end."""
    t0 = time.perf_counter()
    ts = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def time_once(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    monitor: LoadMonitor | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times, round-robin, after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        # Rotate the order each round so no callable always runs first.
        keys = list(fns)
        k0 = r % len(keys)
        for k in keys[k0:] + keys[:k0]:
            if monitor is None:
                out[k].append(time_once(fns[k]))
            else:
                out[k].append(monitor.measure(fns[k], f"{k} (round {r + 1}/{repeats})", say))
    return out


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> float:
    """Relative spread (max-min)/median: how much to trust a median."""
    m = med(xs)
    return (max(xs) - min(xs)) / m if m else 0.0


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small, fast run (CI smoke test)")
    p.add_argument("--json", metavar="PATH", help="also write the JSON result to PATH")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement")
    p.add_argument("--max-wait", type=float, default=120.0,
                   help="seconds to wait for a quiet machine before each timed run "
                        "(5x this in all, then noisy runs are kept and flagged; "
                        "default 120, or 10 with --quick)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: torch's choice, 2 here)")
    return p


def set_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


def max_wait(args: argparse.Namespace) -> float:
    """--max-wait as given; with --quick and no explicit --max-wait, a short 10 s."""
    explicit = any(a == "--max-wait" or a.startswith("--max-wait=") for a in sys.argv[1:])
    return args.max_wait if explicit or not getattr(args, "quick", False) else 10.0


def monitor_for(max_wait_s: float) -> LoadMonitor:
    """A LoadMonitor whose threshold leaves torch's threads their own cores.

    With torch on all cores (the default, 2 here) any other busy process hurts: threshold
    0.25 core. With ``--threads 1`` on 2 cores another process may use up to one core.
    """
    import torch

    spare = (os.cpu_count() or 1) - torch.get_num_threads()
    return LoadMonitor(max_wait_s=max_wait_s, threshold=max(0, spare) + 0.25)


def machine() -> dict[str, Any]:
    import torch

    import steerlab

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": _version("transformers"),
        "steerlab": getattr(steerlab, "__version__", "?"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table when rich is there, else plain aligned columns."""
    cells = [[str(c) for c in r] for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        for h in headers:
            t.add_column(h)
        for r in cells:
            t.add_row(*r)
        Console(width=160).print(t)
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
        print(title)
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for r in cells:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    sys.stdout.flush()


def emit(result: dict[str, Any], json_path: str | None) -> None:
    """Write the JSON result to ``json_path`` (if given) and as the last line of stdout."""
    text = json.dumps(result, default=_jsonable)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2, default=_jsonable) + "\n")
    print(text)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def r3(x: float) -> float:
    return round(float(x), 3)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"
