"""What a result file records about where it was measured: cores, CPU model, memory, OS,
Python, load at the start - so a reader can tell whether two result files are comparable."""

import os
import platform
import sys


def machine_info() -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = round(int(line.split()[1]) / 2**20, 1)
                    break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cores": os.cpu_count(), "cpu_model": model, "memory_gib": mem,
            "os": platform.platform(), "python": sys.version.split()[0],
            "loadavg_at_start": load}
