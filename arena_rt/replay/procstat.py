"""CPU and memory of local processes, read from /proc (Linux)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its own threads, not its children), in seconds."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICK


def read_rss_bytes(pid: int) -> int:
    raw = Path(f"/proc/{pid}/statm").read_text().split()
    return int(raw[1]) * _PAGE


def read_peak_rss_bytes(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


@dataclass
class ProcessSampler:
    """Samples one process: CPU % (100 = one core) and RSS over time."""

    pid: int
    t0_ns: int
    samples: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    _last: tuple[int, float] | None = None
    _first: tuple[int, float] | None = None

    def sample(self) -> dict[str, float] | None:
        if self.error:
            return None
        now = time.monotonic_ns()
        try:
            cpu = read_cpu_seconds(self.pid)
            rss = read_rss_bytes(self.pid)
        except (OSError, ValueError, IndexError) as exc:
            self.error = f"cannot read /proc/{self.pid}: {exc}"
            return None
        if self._first is None:
            self._first = (now, cpu)
        point: dict[str, float] = {
            "t": (now - self.t0_ns) / 1e9,
            "rssBytes": rss,
            "cpuSeconds": cpu,
        }
        if self._last is not None and now > self._last[0]:
            point["cpuPercent"] = round(
                100 * (cpu - self._last[1]) / ((now - self._last[0]) / 1e9), 1
            )
        self._last = (now, cpu)
        self.samples.append(point)
        return point

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": self.pid}
        if self.error and not self.samples:
            out["error"] = self.error
            return out
        if not self.samples:
            return out
        rss = [s["rssBytes"] for s in self.samples]
        cpus = [s["cpuPercent"] for s in self.samples if "cpuPercent" in s]
        first, last = self.samples[0], self.samples[-1]
        span = last["t"] - first["t"]
        out.update(
            rssStartBytes=int(rss[0]),
            rssEndBytes=int(rss[-1]),
            rssMaxBytes=int(max(rss)),
            cpuSeconds=round(last["cpuSeconds"] - first["cpuSeconds"], 3),
            cpuPercentMean=round(100 * (last["cpuSeconds"] - first["cpuSeconds"]) / span, 1)
            if span > 0
            else None,
            cpuPercentMax=max(cpus) if cpus else None,
            samples=self.samples,
        )
        try:
            peak = read_peak_rss_bytes(self.pid)
        except OSError:
            peak = None
        if peak is not None:
            out["rssPeakBytesKernel"] = peak
        if self.error:
            out["error"] = self.error
        return out
