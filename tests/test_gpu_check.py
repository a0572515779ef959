"""scripts/gpu_check.sh in its CPU smoke mode: two parity tests run (on the CPU), the
GPU-only benchmark sections are skipped with a clear line, and one table is printed."""

import os
import subprocess
import sys

from fixture_utils import ROOT


def test_gpu_check_cpu_smoke(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SAGE_JAX_PARITY_LOG", None)
    r = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), "--cpu-smoke", "--out", str(tmp_path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "backend: cpu" in out
    for section in ("quick", "bf16", "training"):
        assert f"== {section}: skipped: no GPU" in out, out
    table = out[out.index("section / figure"):]
    assert "parity" in table and "ok" in table and "2 passed" in table, table
    assert "parity, worst of" in table and "skipped: no GPU" in table and "total" in table, table
    assert (tmp_path / "parity.jsonl").read_text().count("\n") >= 3
