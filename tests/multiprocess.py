"""Starting several JAX processes on this machine for the multi-process tests: each a
``jax.distributed`` process on a localhost coordinator with its own virtual CPU devices
(the CPU collectives carry the all-reduces between them)."""

from __future__ import annotations

import os
import subprocess
import sys

from sage_jax.cli.launch import free_port, process_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def base_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def start(argv: list[str], processes: int, devices: int, cwd: str | None = None,
          env: dict | None = None, distributed: bool | None = None) -> list[subprocess.Popen]:
    """Start ``python ARGV`` as ``processes`` processes of one run (``devices`` CPU
    devices each). ``distributed`` (default: more than one process) sets the
    coordinator, so that even one process runs on the multi-process runtime and its
    CPU collectives. stdout/stderr go to ``cwd/p{i}.log`` when ``cwd`` is given."""
    coordinator = f"127.0.0.1:{free_port()}"
    distributed = processes > 1 if distributed is None else distributed
    procs = []
    for rank in range(processes):
        e = base_env(env)
        if distributed:
            e = process_env(e, rank, processes, coordinator, devices)
        else:
            e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        log = open(os.path.join(cwd, f"p{rank}.log"), "ab") if cwd else subprocess.DEVNULL
        procs.append(subprocess.Popen([sys.executable, *argv], env=e, cwd=cwd, stdout=log,
                                      stderr=subprocess.STDOUT))
    return procs


def wait(procs, timeout: float = 600, cwd: str | None = None) -> None:
    """Wait for every process; a failure raises with the processes' logs."""
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError("the processes did not finish in time:\n" + logs(cwd, len(procs)))
    if any(codes):
        raise AssertionError(f"exit statuses {codes}:\n" + logs(cwd, len(procs)))


def run(argv: list[str], processes: int, devices: int, cwd: str | None = None, env: dict | None = None,
        timeout: float = 600, distributed: bool | None = None) -> None:
    wait(start(argv, processes, devices, cwd, env, distributed), timeout, cwd)


def run_cli(args: list[str], processes: int, devices: int, cwd: str, env: dict | None = None,
            timeout: float = 600, distributed: bool | None = None) -> None:
    """``sage-jax ARGS`` as ``processes`` processes x ``devices`` CPU devices."""
    run(["-m", "sage_jax.cli", *args], processes, devices, cwd, env, timeout, distributed)


def logs(cwd: str | None, n: int) -> str:
    if not cwd:
        return "(no logs kept)"
    out = []
    for r in range(n):
        p = os.path.join(cwd, f"p{r}.log")
        if os.path.exists(p):
            out.append(f"--- process {r}\n" + open(p, errors="replace").read()[-6000:])
    return "\n".join(out)
