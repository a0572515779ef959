"""``launch``: run a ``sage-jax`` command as several processes of one machine.

``sage-jax launch --processes 2 -- train --config tiny --workdir runs/t`` starts two
copies of ``sage-jax train ...``, each told the coordinator address (a free port of
this machine), the process count and its own id through ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. Their output comes back line by line with
the process number in front (``[p1] ...``); when one process fails, the others are
stopped and the launcher exits with the failed process's status. SIGINT and SIGTERM
sent to the launcher are passed on to every process (a SIGTERM makes a training run
stop at the same step on all of them, with a checkpoint).

``--devices-per-process K`` gives each process K virtual CPU devices (XLA's
``--xla_force_host_platform_device_count``): how a multi-device, multi-process run is
tried on a machine without accelerators. On GPUs leave it out; set
``CUDA_VISIBLE_DEVICES`` per process yourself if each should see only some.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(base: dict, rank: int, count: int, coordinator: str, devices_per_process: int | None) -> dict:
    env = dict(base, JAX_COORDINATOR_ADDRESS=coordinator, JAX_NUM_PROCESSES=str(count), JAX_PROCESS_ID=str(rank))
    if devices_per_process:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices_per_process}"])
        env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def launch(command: list[str], processes: int, devices_per_process: int | None = None, port: int | None = None,
           grace_s: float = 20.0, out=None) -> int:
    """Run ``sage-jax COMMAND`` as ``processes`` processes; returns the first failure's
    exit status (0 when all succeed)."""
    out = out or sys.stdout
    if processes < 1:
        raise ValueError(f"--processes must be >= 1, got {processes}")
    if not command:
        raise ValueError("no command to launch: put the sage-jax command after '--', "
                         "e.g. sage-jax launch --processes 2 -- train --config tiny --workdir runs/t")
    if command[0] == "launch":
        raise ValueError("'launch' cannot launch itself")
    coordinator = f"127.0.0.1:{port or free_port()}"
    argv = [sys.executable, "-m", "sage_jax.cli", *command]
    procs = [subprocess.Popen(argv, env=process_env(os.environ, r, processes, coordinator, devices_per_process),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
             for r in range(processes)]
    lock = threading.Lock()

    def pump(rank, stream):
        for line in stream:
            with lock:
                out.write(f"[p{rank}] {line}" if processes > 1 else line)
                out.flush()

    pumps = [threading.Thread(target=pump, args=(r, p.stdout), daemon=True) for r, p in enumerate(procs)]
    for t in pumps:
        t.start()

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed and status == 0:
                rank, status = failed[0]
                with lock:
                    out.write(f"[launch] process {rank} exited with status {status}; stopping the others\n")
                    out.flush()
                _stop([p for p in procs if p.poll() is None], grace_s)
            if all(c is not None for c in (p.poll() for p in procs)):
                break
            time.sleep(0.05)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _stop([p for p in procs if p.poll() is None], grace_s)
        for t in pumps:
            t.join(timeout=5)
    if status == 0:
        status = next((p.returncode for p in procs if p.returncode), 0)
    return status


def _stop(procs, grace_s):
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cmd_launch(args) -> int:
    command = list(args.launch_command)
    if command and command[0] == "--":
        command = command[1:]
    return launch(command, args.processes, args.devices_per_process, args.port)


def register(sub) -> None:
    import argparse

    s = sub.add_parser("launch", help="run a sage-jax command as several processes of this machine",
                       description="Run 'sage-jax COMMAND' as N processes of this machine (jax.distributed on a "
                                   "local port), their output prefixed with [pI]; all stop when one fails.")
    s.add_argument("--processes", "-n", type=int, required=True, help="how many processes")
    s.add_argument("--devices-per-process", type=int, default=None,
                   help="CPU only: give each process this many virtual devices (to try a multi-device run "
                        "without accelerators)")
    s.add_argument("--port", type=int, default=None, help="the coordinator's port (default: a free one)")
    s.add_argument("launch_command", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                   help="the sage-jax command and its arguments, after '--'")
    s.set_defaults(func=cmd_launch)
