"""How PyTorch's OpenMP threads wait between operations. Set before torch is imported: the
OpenMP runtime reads it once, when it loads.

A decode step of a small model is hundreds of small operations (norms, rotary embeddings,
activations), each split over the threads. Between two of them the threads either spin or
sleep. The runtime's default spins long: on a 2-core machine shared with other work that cost
5-8x. Sleeping at once (`OMP_WAIT_POLICY=PASSIVE`) is safe under load but pays a wake-up per
operation: measured on a quiet 2-core Xeon, 30 layers' worth of those operations at a decode
step's shapes took 63 ms sleeping, 37 ms spinning up to 20,000 iterations (GNU OpenMP's
`GOMP_SPINCOUNT`), and a reasoning-length generation run 142 s against 101 s. Next to two
busy processes the short spin still won (74 ms against 116 ms); next to four it lost (302
against 168). So the short spin is used when the load average at start is below the number of
cores, sleeping otherwise; either variable set by the user wins.
"""

from __future__ import annotations

import os

SPIN_COUNT = "20000"


def set_openmp_waiting() -> None:
    """Choose the OpenMP wait for this process and the processes it starts."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "GOMP_SPINCOUNT" not in os.environ and not overloaded():
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def overloaded() -> bool:
    """More runnable work than cores (1-minute load average), or a single core."""
    cores = os.cpu_count() or 1
    return cores < 2 or os.getloadavg()[0] >= cores


def describe() -> str:
    """The wait in force (chosen when this process started), for `crbench env`."""
    policy = os.environ.get("OMP_WAIT_POLICY", "runtime default")
    spin = os.environ.get("GOMP_SPINCOUNT")
    load = os.getloadavg()[0]
    return (f"OpenMP wait: OMP_WAIT_POLICY={policy}, GOMP_SPINCOUNT={spin or 'unset'} "
            f"(load average now {load:.2f} on {os.cpu_count()} cores)")
