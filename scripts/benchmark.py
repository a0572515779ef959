"""Benchmarks, printed as tables with their targets and saved as JSON.

Sections (``--only`` picks some; all run by default):

  peak      float32 matmul peak of this machine: jnp.dot of two 4096x4096 matrices.
  generator StyleGAN2 forward at 256 px (config-f widths) from W+ codes, batch 1, 4, 16,
            64: images/s and achieved GFLOP/s (FLOPs counted from the architecture,
            :mod:`sage_jax.nn.flops`) as a share of that peak. Target: >= 60% at batch 16.
  sage      SAGE generation (encode the shot, codes, decode) for ``--n-images`` images of
            one class, 1-shot: our jitted, vmapped sampler with chunked decoding against
            the generator's own batched throughput (target >= 0.8x) and against a
            per-sample Python loop that mirrors the official ``tools/inference_1_shot.py``
            (for every image: encode the shot, map it, retrieve the similar classes,
            compute the local statistics in numpy, draw one sample, decode one image):
            target 2-3x at 256 px on a CPU, >= 20x at the tiny configuration's 32 px.
  editing   the editing math alone (100 queries -> 10,000 W+ codes, no decoding), at the
            official sizes (119 seen classes, 18 x 512 codes, 6 edited layers, A of
            length 100). Target: < 1 s after compilation.
  memory    ``sage-jax generate --n 10000`` at 256 px (images streamed to disk chunk by
            chunk), in a subprocess, on model files written first: its peak resident
            memory (target < 4 GB), for 32 images (8 with ``--quick``; ``--memory-images
            10000`` for the real thing, 2.5 hours on a CPU). Then the growth with the
            number of images: the same command with a narrow 256 px model (NARROW_256:
            the same image and code sizes, 16-channel convolutions) for 32 and for
            10,000 images (``--memory-growth-images``; not with ``--quick``); the full
            model's figure plus that growth bounds the 10,000-image run.
  compile   first-call latency of generation (256 px) in fresh processes, with JAX's
            persistent compilation cache empty and then filled by the first process.
  training  training throughput of the tiny config (``--config.data.samples_per_class=8
            --config.data.num_seen=8``) as ``sage-jax launch --processes P
            --devices-per-process 1 -- train-gan|train-encoder ...`` runs, P = 1 and 2: the GAN
            stage (adversarial recipe, and the config's own reconstruction recipe) and the
            encoder stage (for the shipped tiny generator). Images/s = global batch x steps /
            seconds over the logging intervals of process 0's ``metrics.jsonl`` after the
            first (which compiles), the share of that time spent waiting for data, and the
            P-process / 1-process ratio (on a CPU the processes share the cores: the ratio
            is the multi-process path's overhead, not a speed-up). ``--train-steps``,
            ``--train-repeats`` (median of interleaved runs), ``--train-processes``,
            ``--train-stages``. ``--train tiny 256`` instead (or as well) times GAN steps
            in fresh processes on this process's devices, with the time the first steps
            took to compile, cold and from the persistent cache (two fresh processes);
            ``--train-devices 8`` repeats it on 8 simulated CPU devices. A run that does
            not finish shows its reason (the exception line) in the table. ``--quick``
            runs only ``--train tiny`` (no launch runs unless ``--train-stages`` is given).
  refine    W+ refinement by optimisation (``sage_jax.inversion.refine_codes``) with the
            shipped tiny model's decoder: milliseconds per image and Adam step for 64
            images and 20 steps, against the same steps run as one ``lax.fori_loop`` (the
            first implementation; on XLA:CPU about 11 times slower).
  bf16      bfloat16 compute against float32 at 256 px: mean |difference| of the saved
            8-bit images (target <= 1 level, i.e. 1/255 of the range) and the speed.

    python scripts/benchmark.py --quick                  # all sections, < 10 min on 2 CPU cores
    python scripts/benchmark.py                          # full sizes (long on a CPU)
    python scripts/benchmark.py --only generator sage --json bench.json
    python scripts/benchmark.py --only training                 # 1 and 2 processes, a few minutes
    python scripts/benchmark.py --only training --train tiny 256 --train-devices 8

A section that does not finish is recorded (its reason in the table, the traceback or
the subprocess's stderr tail in the JSON), the others still run, and the script exits
with status 1 after printing the table.

Models: ``256`` uses the fixture-size networks of ``../shared/fixtures`` (config-f
StyleGAN2 at 256 px, pSp IR-SE50 encoder, the 40-class editing fixture's dictionary
and statistics); ``tiny`` the 32 px tiny architecture with the fixture's tiny decoder.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)

from sage_jax import checkpoints  # noqa: E402
from sage_jax.generation import SampleOptions, SageGenerator  # noqa: E402
from sage_jax.models import PSPModel, init_encoder  # noqa: E402
from sage_jax.nn.flops import generator_flops, matmul_flops  # noqa: E402
from sage_jax.sage import editing as ed  # noqa: E402
from sage_jax.statistics import ClassStatistics, fingerprint  # noqa: E402

SECTIONS = ("peak", "generator", "sage", "editing", "memory", "compile", "training", "refine", "bf16")


def _best_time(fn, reps: int) -> float:
    """Best wall time of ``reps`` calls of ``fn`` (which blocks on its result)."""
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# ----------------------------------------------------------------------------- models
def _editing_fixture(style_dim, n_layers_enc):
    """Class embeddings, A and per-class n_hat of the 40-class editing fixture, cut or
    tiled to the encoder's code size."""
    from fixture_utils import fixture

    r = np.load(fixture("sage_adaptive_editing.npz"))
    emb = r["class_embeddings"][:, :n_layers_enc, :style_dim]
    A = r["A"][:, :style_dim]
    ns = r["ns_per_class"]
    S = ns.shape[0]
    labels = np.repeat(np.arange(S), ns.shape[1])
    moments = ed.moments_from_codes(jnp.asarray(ns.reshape(-1, *ns.shape[2:])), jnp.asarray(labels), S)
    return emb, A, moments, ns


@functools.lru_cache(maxsize=None)
def generator_256():
    from fixture_utils import state_dict_from_manifest

    return checkpoints.load_generator(state_dict_from_manifest("stylegan2_generator_256.json")[0])


# The memory figure's second model: 256 px in and out, 18 x 512 codes (so every array
# whose size grows with the number of images is as large as with the full model), but
# 16-channel convolutions: it decodes about 100x faster, so 10,000 images take minutes.
NARROW_256 = {"generator": dict(size=256, style_dim=512, n_mlp=8, channels=tuple((2 ** i, 16) for i in range(2, 9))),
              "encoder": dict(kind="GradualStyleEncoder", num_layers=18, mode="ir_se", input_size=256, n_styles=18,
                              style_dim=512, widths=(16, 16, 32, 32))}


@functools.lru_cache(maxsize=None)
def build(size: str):
    """(psp model, dictionary A, class statistics, raw per-class n_hat) for a size:
    ``256`` (config-f and pSp IR-SE50 of the fixtures), ``256-narrow`` (NARROW_256,
    random weights) or ``tiny``."""
    from fixture_utils import state_dict_from_manifest

    if size == "256":
        G = generator_256()
        E = checkpoints.load_encoder(state_dict_from_manifest("psp_gradual_style_encoder_ir_se50.json")[0])
    elif size == "256-narrow":
        from sage_jax.models import init_generator

        G = init_generator(NARROW_256["generator"], jax.random.PRNGKey(0))
        E = init_encoder(NARROW_256["encoder"], jax.random.PRNGKey(1))
    else:  # the shipped tiny model's encoder and generator
        from sage_jax.demo import ASSET_DIR

        shipped = checkpoints.load_psp(os.path.join(ASSET_DIR, "psp"))
        G, E = shipped.decoder, shipped.encoder
    avg = np.zeros((G.n_latent, G.style_dim), np.float32)
    psp = PSPModel(E, G, avg, {"start_from_latent_avg": True, "output_size": G.size})
    emb, A, moments, ns = _editing_fixture(G.style_dim, E.n_styles)
    stats = ClassStatistics([f"c{i:03d}" for i in range(emb.shape[0])], np.full(emb.shape[0], ns.shape[1]),
                            emb, fingerprint(E.variables), jax.tree_util.tree_map(np.asarray, moments), "bench")
    return psp, jnp.asarray(A), stats, ns


def dictionary_with(A):
    """A DictionaryModel (official groups) whose A is the given one."""
    from sage_jax.models import DictionaryModel, init_dictionary

    d = init_dictionary({"groups": ((0, 1, 2), (3, 4, 5)), "style_dim": A.shape[1], "a_length": A.shape[2]},
                        jax.random.PRNGKey(0))
    params = dict(d.variables["params"], A=jnp.asarray(A))
    return DictionaryModel(d.config, {"params": params})


def _random_wplus(G, batch, seed=0):
    return jax.random.normal(jax.random.PRNGKey(seed), (batch, G.n_latent, G.style_dim))


def _compiled_generator(G, batch):
    """The generator's forward from W+ (stored noise) compiled ahead of time for
    ``batch``: (callable, compile seconds)."""
    from sage_jax.models import _generate

    w = _random_wplus(G, batch)
    t = time.perf_counter()
    lowered = _generate.lower(G.module, G.variables, (w,), None, None, jnp.asarray(1.0), None, None, None,
                              input_is_latent=True, randomize=False, return_latents=False, truncate=False)
    compiled = lowered.compile()
    dt = time.perf_counter() - t

    def run(codes=w):
        return compiled(G.variables, (codes,), None, None, jnp.asarray(1.0), None, None, None)

    return run, dt


# ----------------------------------------------------------------------------- sections
def bench_peak(n: int = 4096, reps: int = 5) -> dict:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    t = _best_time(lambda: f(a, b).block_until_ready(), reps)
    return {"n": n, "seconds": t, "gflops": matmul_flops(n) / t / 1e9}


def bench_generator(batches, peak_gflops: float, reps: int = 2, quick: bool = False) -> dict:
    """Images/s and GFLOP/s at each batch, the images copied to the host (as SAGE
    generation's are, so its comparison can use these figures). Compiled ahead of time,
    so the first call does no compilation: batches above 16 (and 16 with ``quick``) are
    timed once without a warm-up call; smaller ones as the best of ``reps`` after one."""
    G = generator_256()
    per_image = generator_flops(G.size, G.style_dim, channels=G.config.get("channels")).total
    rows = []
    for b in batches:
        run, compile_s = _compiled_generator(G, b)
        several = b < 16 or (b == 16 and not quick)   # batch 16: the target
        if several:
            np.asarray(run())
        n_reps = reps if several else 1
        t = _best_time(lambda: np.asarray(run()), n_reps)
        gflops = per_image * b / t / 1e9
        rows.append({"batch": b, "images_per_s": b / t, "gflops": gflops, "share_of_peak": gflops / peak_gflops,
                     "compile_s": compile_s, "reps": n_reps})
        print(f"  batch {b:>3}: {b / t:7.2f} img/s  {gflops:7.1f} GFLOP/s  {100 * gflops / peak_gflops:5.1f}% of peak"
              f"  (compile {compile_s:.1f} s)", flush=True)
    return {"gflop_per_image": per_image / 1e9, "rows": rows}


def ours(psp, A, stats, shot, n, opts, chunk, reps=1):
    """(seconds from the shot image, seconds from the shot's codes, images): our path,
    best of ``reps`` after compilation."""
    gen = SageGenerator(psp, dictionary_with(A), stats, check=False)
    key = jax.random.PRNGKey(0)
    imgs = gen.generate(key, shot[None, None], n, opts, chunk)[0]  # compiles both parts
    raw = gen.encode(shot[None])[None]
    t_all = _best_time(lambda: gen.generate(key, shot[None, None], n, opts, chunk), reps)
    t_codes = _best_time(lambda: gen.images_from_codes(key, raw, n, opts, chunk), reps)
    return t_all, t_codes, imgs


def official_loop(psp, A, stats, ns, shot, n, opts):
    """Mirrors the official inference loop: everything per image, statistics in numpy."""
    E, G = psp.encoder, psp.decoder
    emb = jnp.asarray(stats.embeddings)
    basis = ed.relevant_basis(emb)
    A_np = np.asarray(A)
    rng = np.random.default_rng(0)
    avg = jnp.asarray(psp.latent_avg)

    def one():
        latents = E(shot[None])[0]                                            # net.get_latents
        ce = ed.map_embedding(latents, basis, opts.retrieval_t_B)            # get_ce
        cates = np.asarray(ed.similar_classes(ce, emb, opts.t_C))            # get_similar_cate
        local = np.concatenate([ns[c] for c in cates])                       # local_ns
        codes = local.transpose(1, 0, 2)                                      # calc_statis
        mean, mean_abs = codes.mean(1), np.abs(codes).mean(1)
        covs = [np.cov(codes[i].T) for i in range(codes.shape[0])]
        base = np.array(ed.map_embedding(latents, basis, opts.t_B[0]))
        dws = []
        for i in range(mean.shape[0]):                                        # sampler
            draw = rng.multivariate_normal(mean[i], covs[i])
            beta = np.sort(mean_abs[i])[::-1][opts.t_A]
            dws.append(A_np[i] @ (draw * (mean_abs[i] > beta)))
        base[: len(dws)] += opts.alpha * np.stack(dws)
        w = jnp.asarray(base[None, : G.n_latent]) + avg
        return np.asarray(G(w, input_is_latent=True))                         # net.decode

    one()  # compile
    t = time.perf_counter()
    for _ in range(n):
        one()
    return time.perf_counter() - t


def generator_throughput(G, batch, reps=2):
    """Images/s of the generator alone, batched, images copied to the host as ours are."""
    run, _ = _compiled_generator(G, batch)
    run().block_until_ready()
    return batch / _best_time(lambda: np.asarray(run()), reps)


def bench_sage(sizes, n_images: dict, chunks: dict, loop_images: dict | None = None,
               generator_rates: dict | None = None) -> list:
    """``generator_rates``: {batch: images/s} of the 256 px generator measured earlier in
    this run (the generator section, the same network); used for the comparison at 256
    px when it has the chunk size, instead of timing the generator again."""
    rows = []
    for size in sizes:
        n, chunk = n_images[size], chunks[size]
        psp, A, stats, ns = build(size)
        opts = SampleOptions(t_B=(10,), t_C=8, t_A=20, alpha=1.0)
        shot = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (psp.encoder.input_size,) * 2 + (3,),
                                             minval=-1, maxval=1))
        fast = size == "tiny"  # a fraction of a second: best of several runs
        t_ours, t_from_codes, imgs = ours(psp, A, stats, shot, n, opts, chunk, reps=5 if fast else 1)
        assert imgs.shape[0] == n and np.isfinite(imgs).all()
        reuse = size == "256" and chunk in (generator_rates or {})
        g_only = generator_rates[chunk] if reuse else generator_throughput(psp.decoder, chunk, reps=20 if fast else 1)
        n_loop = (loop_images or {}).get(size, n)  # the loop's rate is steady: fewer images suffice
        t_loop = official_loop(psp, A, stats, ns, shot, n_loop, opts)
        row = {"size": size, "images": n, "chunk": chunk, "ours_images_per_s": n / t_ours,
               "generator_only_images_per_s": g_only, "generator_only_from": "generator section" if reuse else "here",
               "from_codes_images_per_s": n / t_from_codes,
               "ours_over_generator": n / t_from_codes / g_only, "end_to_end_over_generator": n / t_ours / g_only,
               "loop_images": n_loop, "loop_images_per_s": n_loop / t_loop,
               "speedup_over_loop": (n_loop / t_loop) ** -1 * (n / t_ours),
               "ours_seconds": t_ours, "loop_seconds": t_loop}
        rows.append(row)
        print(f"  {size:>4}: ours {row['from_codes_images_per_s']:.2f} img/s from the shot's codes "
              f"({row['ours_images_per_s']:.2f} from its image), generator alone {g_only:.2f} img/s "
              f"(x{row['ours_over_generator']:.2f}; x{row['end_to_end_over_generator']:.2f} with the encoding), "
              f"per-sample loop {row['loop_images_per_s']:.2f} img/s (ours x{row['speedup_over_loop']:.1f})",
              flush=True)
    return rows


def editing_problem(S=119, L=18, D=512, E=6, l=100, per_class=32, seed=0):
    """Random class statistics at the official sizes: (EditingState, shot codes (100, 1, L, D))."""
    from sage_jax.generation import EditingState

    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(S, L, D)).astype(np.float32)
    ns = rng.normal(size=(S * per_class, E, l)).astype(np.float32) * rng.uniform(0.1, 1, (1, E, l)).astype(np.float32)
    moments = ed.moments_from_codes(jnp.asarray(ns), jnp.asarray(np.repeat(np.arange(S), per_class)), S)
    A = jnp.asarray(rng.normal(size=(E, D, l)).astype(np.float32) / np.sqrt(l))
    state = EditingState(jnp.asarray(emb), ed.relevant_basis(jnp.asarray(emb)), moments, A)
    shots = jnp.asarray(rng.normal(size=(100, 1, L, D)).astype(np.float32))
    return state, shots


def bench_editing(n_queries=100, total=10_000, reps=3) -> dict:
    from sage_jax.generation import sample_codes

    state, shots = editing_problem()
    shots = shots[:n_queries]
    per_query = total // n_queries
    opts = SampleOptions(t_B=(10,), t_C=30, t_A=50, alpha=1.0)
    layers = tuple(range(6))
    key = jax.random.PRNGKey(0)

    def run():
        return sample_codes(key, state, shots, n_samples=per_query, opts=opts, layers=layers).block_until_ready()

    t0 = time.perf_counter()
    out = run()
    first = time.perf_counter() - t0
    assert out.shape == (n_queries, per_query, 18, 512) and bool(jnp.all(jnp.isfinite(out)))
    t = _best_time(run, reps)
    return {"queries": n_queries, "samples": total, "seconds": t, "first_call_s": first}


def write_generation_inputs(root: str, size: str = "256") -> dict:
    """A 256 px pSp model (``build(size)``), dictionary, class statistics (with the
    fingerprints ``sage-jax generate`` checks) and one shot image, written as a user
    would have them."""
    from sage_jax.images import save_png, to_uint8

    psp, A, stats, _ = build(size)
    d = dictionary_with(A)
    checkpoints.save_psp(os.path.join(root, "psp"), psp, overwrite=True)
    checkpoints.save_model(os.path.join(root, "dictionary"), d, overwrite=True)
    stats.dictionary_fingerprint = fingerprint(d.variables)
    stats.save(os.path.join(root, "stats.npz"))
    shot = jax.random.uniform(jax.random.PRNGKey(1), (256, 256, 3), minval=-1, maxval=1)
    save_png(os.path.join(root, "shots", "cls", "shot.png"), to_uint8(shot))
    return {"checkpoint": os.path.join(root, "psp"), "dictionary": os.path.join(root, "dictionary"),
            "stats": os.path.join(root, "stats.npz"), "shots": os.path.join(root, "shots")}


_PEAK_RSS = """
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if r.returncode:
    sys.exit(r.stderr[-4000:])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def tiny_generation_inputs(root: str) -> dict:
    """The shipped tiny model's files and one 32 px shot."""
    from sage_jax.demo import ASSET_DIR
    from sage_jax.images import save_png, to_uint8

    shot = jax.random.uniform(jax.random.PRNGKey(1), (32, 32, 3), minval=-1, maxval=1)
    save_png(os.path.join(root, "shots", "cls", "shot.png"), to_uint8(shot))
    return {"checkpoint": os.path.join(ASSET_DIR, "psp"), "dictionary": os.path.join(ASSET_DIR, "dictionary"),
            "stats": os.path.join(ASSET_DIR, "class_stats.npz"), "shots": os.path.join(root, "shots")}


def bench_memory(n_images: int, size: str = "256", files: dict | None = None) -> dict:
    """Peak resident memory of ``sage-jax generate --n N`` (default chunking), measured
    by a wrapper process whose only child is the command."""
    with tempfile.TemporaryDirectory() as root:
        if files is None:
            files = write_generation_inputs(root) if size == "256" else tiny_generation_inputs(root)
        out = os.path.join(root, "out")
        cmd = [sys.executable, "-m", "sage_jax.cli", "generate", "--checkpoint", files["checkpoint"],
               "--dictionary", files["dictionary"], "--stats", files["stats"], "--shots", files["shots"],
               "--k", "1", "--n", str(n_images), "--t-c", "8", "--t-a", "8" if size == "tiny" else "20",
               "--out", out, "--quiet"]
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", _PEAK_RSS, *cmd], capture_output=True, text=True, cwd=ROOT,
                           env=dict(os.environ, SAGE_JAX_COMPILATION_CACHE="off"))
        dt = time.perf_counter() - t
        if r.returncode:
            raise SubprocessFailed("the memory benchmark's generate run", r.returncode, r.stderr)
        written = len([f for f in os.listdir(os.path.join(out, "cls")) if f.startswith("sage_")])
    return {"size": size, "images": n_images, "written": written,
            "peak_rss_mb": int(r.stdout.split()[-1]) / 1024, "seconds": dt}


def compile_probe(files: dict, cache_dir: str | None) -> dict:
    """(runs in a fresh subprocess) first-call latency of generation at 256 px from the
    model files a user has (encode a shot, sample 4 codes, decode them), and the same
    call once compiled."""
    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from sage_jax.images import load_image

    t0 = time.perf_counter()
    psp = checkpoints.load_psp(files["checkpoint"])
    gen = SageGenerator(psp, checkpoints.load_dictionary(files["dictionary"]), ClassStatistics.load(files["stats"]))
    shot = load_image(os.path.join(files["shots"], "cls", "shot.png"), psp.encoder.input_size)
    opts = SampleOptions(t_B=(10,), t_C=8, t_A=20, alpha=1.0)
    setup = time.perf_counter() - t0

    def call():
        gen.generate(jax.random.PRNGKey(0), shot[None, None], 4, opts, 4)

    t = time.perf_counter()
    call()
    first = time.perf_counter() - t
    t = time.perf_counter()
    call()
    return {"first_call_s": first, "second_call_s": time.perf_counter() - t, "setup_s": setup}


# ----------------------------------------------------------------------------- failures
_TRACEBACK = "Traceback (most recent call last):"
_PROCESS_PREFIX = re.compile(r"^\[p(\d+)\] ?")              # sage-jax launch's "[p1] ..."
_LAUNCH_EXIT = re.compile(r"^\[launch\] process (\d+) exited with status (-?\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# the line that says what went wrong: an exception's, argparse's (and UsageError's)
# "prog: error: ...", absl's fatal "F0123 ...", the kernel's "Killed"
_REASON_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Stopped|Failed|Failure)(?::|$)"
                          r"|[\w.-]+(?: [\w.-]+)*: error: |F\d{4} |Killed$|Check failed)")
# lines that never say it: progress bars, gloo's connection chatter, absl's info and
# warning lines, Python warnings
_NOISE_LINE = re.compile(r"^\s*$|\d+%\||\[Gloo\]|^[IW]\d{4} |: \w*Warning: |^\s*warnings\.warn\(|^\[launch\] ")


def _exit_description(returncode: int) -> str:
    if returncode < 0:
        sig = -returncode
        what = {9: "SIGKILL: most likely the kernel's out-of-memory killer", 15: "SIGTERM", 6: "SIGABRT",
                11: "SIGSEGV"}.get(sig, "")
        return f"killed by signal {sig}" + (f" ({what})" if what else "")
    return f"exit status {returncode}"


def _reason_in(lines: list[str], max_lines: int = 3) -> str | None:
    """What a process's own output says went wrong: the message of its last traceback
    (up to ``max_lines`` lines), else its last line that reads as an error."""
    starts = [i for i, line in enumerate(lines) if line.strip() == _TRACEBACK]
    if starts:
        tail = lines[starts[-1] + 1:]
        i = 0
        while i < len(tail) and (not tail[i].strip() or tail[i][:1].isspace()):   # the frames
            i += 1
        message = []
        for line in tail[i:]:
            if not line.strip() or len(message) == max_lines:
                break
            if not _NOISE_LINE.search(line):
                message.append(line.strip())
        if message:
            return " / ".join(message)
    for line in reversed(lines):
        if _REASON_LINE.match(line.strip()) and not _NOISE_LINE.search(line):
            return line.strip()
    return None


def failure_reason(output: str) -> str:
    """The reason a subprocess failed, from its output (stderr, or ``sage-jax launch``'s
    merged output with its ``[pI]`` prefixes): the exception (or error) line of the
    process that failed first, prefixed with the process when there are several; else
    the last meaningful line; else how the launcher saw the process end."""
    lines = [_ANSI.sub("", line.split("\r")[-1]).rstrip() for line in output.splitlines()]
    failed = status = None
    streams: dict = {}
    for line in lines:
        m = _LAUNCH_EXIT.match(line)
        if m and failed is None:
            failed, status = m.group(1), int(m.group(2))
        p = _PROCESS_PREFIX.match(line)
        streams.setdefault(p.group(1) if p else None, []).append(line[p.end():] if p else line)
    ranks = [k for k in streams if k is not None]
    for k in ([failed] if failed in streams else []) + [k for k in streams if k != failed]:
        why = _reason_in(streams[k])
        if why:
            return (f"process {k}: " if k is not None and len(ranks) > 1 else "") + why
    ended = f"process {failed}: {_exit_description(status)}" if failed is not None else ""
    rest = [line for line in lines if not _NOISE_LINE.search(line)]
    if rest:
        return rest[-1].strip() + (f" ({ended})" if ended else "")
    return ended


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


class SubprocessFailed(RuntimeError):
    """A benchmark subprocess that did not finish: ``reason`` (the line saying why,
    :func:`failure_reason`), ``returncode`` and ``output_tail`` (the last 4000
    characters of its stderr, or of the launcher's merged output)."""

    def __init__(self, what: str, returncode: int, output: str, reason: str | None = None):
        self.returncode = returncode
        self.output_tail = output[-4000:]
        self.reason = reason or failure_reason(output) or "no output"
        super().__init__(f"{what} failed ({_exit_description(returncode)}): {self.reason}")

    def record(self) -> dict:
        """What a results row keeps: the reason first (the table shows it), the tail in full."""
        return {"error": f"{self.reason} ({_exit_description(self.returncode)})", "returncode": self.returncode,
                "stderr_tail": self.output_tail}


def _subprocess_json(code: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code], env=env or dict(os.environ), capture_output=True, text=True)
    if out.returncode:
        raise SubprocessFailed("benchmark subprocess", out.returncode, out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_compile(files: dict) -> list:
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as cache:
        row = {"what": "generation"}
        for label in ("cold_cache", "warm_cache"):
            code = ("import json, sys; sys.path.insert(0, %r); from benchmark import compile_probe; "
                    "print(json.dumps(compile_probe(%r, %r)))" % (here, files, cache))
            r = _subprocess_json(code)
            row[label + "_s"] = r["first_call_s"]
            row["call_s"] = r["second_call_s"]   # the same call once compiled: no compilation in it
    print(f"  generation: first call {row['cold_cache_s']:.1f} s in a fresh process (compiles; fills the "
          f"persistent cache), {row['warm_cache_s']:.1f} s in the next one (reads it); "
          f"{row['call_s']:.1f} s once compiled", flush=True)
    return [row]


TRAIN_STEPS = {"tiny": 40, "256": 4}   # timed steps per config (after the compiling first interval)
TIMING_KEYS = ("interval_s", "interval_steps", "data_wait_share")


def read_metrics(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def interval_throughput(logs: list[dict], images_per_step: int, skip_first: bool = True) -> dict:
    """Speed from the training loop's own timing in ``metrics.jsonl``: only the rows that
    carry it (:data:`TIMING_KEYS`; the reconstruction recipe's final row, the learning
    curve's and a pipeline's quality rows have none), without the first of them (it
    holds the compilation) when ``skip_first``. Images/s = ``images_per_step`` x steps /
    seconds summed over those intervals; the data-wait share weighted by their seconds;
    also each interval's own images/s (the spread shows how noisy the machine was).
    Raises ValueError when no interval is left."""
    timed = [r for r in logs if all(k in r for k in TIMING_KEYS)]
    first = timed[0] if timed else None
    use = timed[1:] if skip_first else timed
    if not use:
        raise ValueError(f"metrics.jsonl has {len(timed)} row(s) with the loop's timing ({', '.join(TIMING_KEYS)}) "
                         f"among {len(logs)}: no timed interval " + ("after the first (which compiles); "
                                                                   "give more steps" if skip_first else ""))
    sec = sum(r["interval_s"] for r in use)
    n = sum(r["interval_steps"] for r in use)
    return {"steps": int(n), "seconds": sec, "intervals": len(use), "steps_per_s": n / sec,
            "images_per_s": n * images_per_step / sec,
            "data_wait_share": sum(r["data_wait_share"] * r["interval_s"] for r in use) / sec,
            "interval_images_per_s": [r["interval_steps"] * images_per_step / r["interval_s"] for r in use],
            "first_interval_s": first["interval_s"], "first_interval_steps": int(first["interval_steps"])}


def training_speed(config_name: str, steps: int | None = None, batch: int | None = None,
                   recipe: str = "adversarial") -> dict:
    """GAN training speed on this process's devices from the loop's own timing
    (``metrics.jsonl``: seconds per step and the share spent waiting for data over the
    last logging interval; the first interval, which compiles, is reported apart).
    ``tiny``: the synthetic 32 px data; ``256``: the animal-faces config on random
    images. ``recipe``: ``gan.recipe`` (default the adversarial StyleGAN2 GAN, whose four
    jitted updates the compile figure counts; the tiny config's own default is the
    reconstruction recipe)."""
    from sage_jax.config import apply_overrides, load_config
    from sage_jax.data.arrays import ArrayDataset
    from sage_jax.train.gan import train_gan

    steps = steps or TRAIN_STEPS[config_name]
    cfg = load_config(os.path.join(ROOT, "configs", "tiny.py" if config_name == "tiny" else "animal_faces.py"))
    n_dev = jax.device_count()
    batch = batch or (cfg.gan.batch_size if config_name == "tiny" else max(n_dev, 4))
    batch = max(n_dev, batch // n_dev * n_dev)
    # the first interval holds the compiling step and a full regularisation cycle
    warm = max(cfg.gan.d_reg_every, cfg.gan.g_reg_every) if config_name == "tiny" else 1
    apply_overrides(cfg, [f"gan.recipe={recipe}", f"gan.batch_size={batch}", "gan.sample_every=0",
                          "gan.ckpt_every=1000000", f"gan.log_every={warm}", f"gan.steps={warm + steps}",
                          "data.samples_per_class=8", "gan.augment=false"]
                    + (["gan.mapping_steps=10"] if recipe == "reconstruction" else []))   # after the loop, untimed
    size = cfg.model.generator.size
    if config_name == "tiny":
        from sage_jax.data.loader import seen_dataset

        data = seen_dataset(cfg.data)
    else:
        rng = np.random.default_rng(0)
        data = ArrayDataset(rng.uniform(-1, 1, (4 * batch, size, size, 3)).astype(np.float32),
                            np.zeros(4 * batch, np.int32))
    # compile time as JAX reports it (tracing, lowering, and the XLA compile or the
    # persistent-cache read) for the four jitted updates (the reconstruction recipe's one)
    compile_s = {"trace": 0.0, "lower": 0.0, "backend": 0.0}
    kinds = {"/jax/core/compile/jaxpr_trace_duration": "trace",
             "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
             "/jax/core/compile/backend_compile_duration": "backend"}
    names = ("update",) if recipe == "reconstruction" else ("d_step", "d_reg_step", "g_step", "g_reg_step")

    def listener(event, duration, **kw):
        name = str(kw.get("fun_name", "")).removeprefix("jit(").removesuffix(")")   # "d_step" or "jit(d_step)"
        if event in kinds and name in names:
            compile_s[kinds[event]] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        train_gan(cfg.model.generator, cfg.model.discriminator, cfg.gan, data, work, quiet=True)
        total = time.perf_counter() - t0
        logs = read_metrics(os.path.join(work, "metrics.jsonl"))
    speed = interval_throughput(logs, batch)   # the first interval (log_every = warm steps) compiles
    return {"config": config_name, "recipe": recipe, "devices": n_dev, "batch": batch, "steps": speed["steps"],
            "steps_per_s": speed["steps_per_s"], "images_per_s": speed["images_per_s"],
            "data_wait_share": speed["data_wait_share"], "interval_images_per_s": speed["interval_images_per_s"],
            "first_interval_s": speed["first_interval_s"], "first_interval_steps": speed["first_interval_steps"],
            "steps_compile_s": sum(compile_s.values()), "steps_compile_parts_s": compile_s, "run_s": total,
            "peak_rss_mb": _vm_hwm_mb()}


def _vm_hwm_mb() -> float:
    """This process's peak resident memory since it started (VmHWM; getrusage's
    ru_maxrss also counts the parent's pages at fork, before exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_training(configs, device_counts, steps: int | None = None, warm: bool = True) -> list:
    """Each config in two fresh processes sharing a new persistent compilation cache:
    the first compiles (and fills the cache), the second reads it; speeds are the
    second's (the first's with ``warm=False``, which skips the second process).
    ``device_counts``: 1 and/or numbers of simulated CPU devices. ``steps``: timed
    steps (default TRAIN_STEPS)."""
    here = os.path.dirname(os.path.abspath(__file__))
    rows = []
    for n_dev in device_counts:
        env = dict(os.environ)
        if n_dev > 1:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_dev}"
        for c in configs:
            with tempfile.TemporaryDirectory() as cache:
                env["SAGE_JAX_COMPILATION_CACHE"] = cache
                code = ("import json, sys; sys.path.insert(0, %r); from benchmark import training_speed; "
                        "from sage_jax.parallel import enable_compilation_cache; enable_compilation_cache(); "
                        "print(json.dumps(training_speed(%r, %r)))" % (here, c, steps))
                try:
                    cold = _subprocess_json(code, env)
                    row = _subprocess_json(code, env) if warm else dict(cold)
                except SubprocessFailed as e:   # a run that does not fit (8 devices at 256 px) must not lose the rest
                    rows.append({"config": c, "devices": n_dev, **e.record()})
                    print(f"  {c:>4} on {n_dev} device(s): did not finish: {rows[-1]['error']}", flush=True)
                    continue
            # compile (or cache-read) time of the four updates, as JAX's monitoring
            # events report it (the first interval also runs the regularised steps,
            # which at 256 px cost minutes on a CPU, so it is not a compile figure)
            row["first_interval_cold_s"] = cold["first_interval_s"]
            row["compile_cold_s"] = cold["steps_compile_s"]
            if warm:
                row["first_interval_warm_s"] = row["first_interval_s"]
                row["compile_warm_s"] = row["steps_compile_s"]
            rows.append(row)
            _print_training(row)
    return rows


# The training stages the process runs measure: (command, config section, overrides)
STAGES = {
    "gan-adversarial": ("train-gan", "gan", ["gan.recipe=adversarial"]),
    "gan-reconstruction": ("train-gan", "gan", ["gan.recipe=reconstruction",
                                                "gan.mapping_steps=10"]),   # fitted after the loop, untimed
    "encoder": ("train-encoder", "psp", ["psp.latent_avg_samples=1000"]),
}
PROCESS_LOG_EVERY = 16      # one logging interval = one full lazy-regularisation cycle (d_reg_every 16, g_reg_every 4)
PROCESS_STEPS = 64          # timed steps per run (4 intervals) after the compiling first one
PROCESS_DATA = ["data.samples_per_class=8", "data.num_seen=8"]   # 64 synthetic images: built in a moment
MULTI_PROCESS_NOTE = ("on a CPU machine ({cpus} cores) the processes share the same cores, so the N-process / "
                      "1-process ratio shows the overhead of the multi-process path (a cross-process all-reduce "
                      "every step, each process's own dispatch), not a speed-up")


def _stage_command(stage: str, processes: int, workdir: str, steps: int, log_every: int,
                   extra: list | tuple = ()) -> list[str]:
    """``sage-jax launch --processes P --devices-per-process 1 -- COMMAND ...`` for a stage
    of the tiny config: ``log_every + steps`` steps (no samples, no checkpoint before the
    end), the small synthetic data of PROCESS_DATA, then ``extra`` overrides."""
    from sage_jax.demo import ASSET_DIR

    command, section, overrides = STAGES[stage]
    sets = overrides + [f"{section}.steps={log_every + steps}", f"{section}.log_every={log_every}",
                        f"{section}.ckpt_every=1000000"] + (["gan.sample_every=0"] if section == "gan" else [])
    argv = [command, "--config", os.path.join(ROOT, "configs", "tiny.py"), "--workdir", workdir, "--quiet"]
    if command == "train-encoder":   # the shipped tiny model's generator: the pipeline's (class-conditional) one
        argv += ["--generator", os.path.join(ASSET_DIR, "psp", "decoder")]
    argv += [f"--config.{kv}" for kv in sets + PROCESS_DATA + list(extra)]
    return [sys.executable, "-m", "sage_jax.cli", "launch", "--processes", str(processes),
            "--devices-per-process", "1", "--", *argv]


def _run_command(cmd: list[str], timeout: float, what: str) -> str:
    """Run ``cmd`` (stdout and stderr together); its output, or SubprocessFailed with the
    reason. On a timeout the launcher gets SIGTERM, which it passes on to its processes."""
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        raise SubprocessFailed(what, p.returncode, out or "", reason=f"timed out after {timeout:.0f} s") from None
    if p.returncode:
        raise SubprocessFailed(what, p.returncode, out)
    return out


def process_run(stage: str, processes: int, steps: int = PROCESS_STEPS, log_every: int = PROCESS_LOG_EVERY,
                extra: list | tuple = (), timeout: float = 1800.0) -> dict:
    """One run of a stage on ``processes`` processes x 1 device: images/s over the timed
    intervals (process 0's ``metrics.jsonl``, the first interval left out), with the
    global batch from the run's own ``config.json`` (the encoder's: ``psp.batch_size``,
    real and generated images together, every one encoded each step)."""
    steps = -(-steps // log_every) * log_every   # whole intervals
    with tempfile.TemporaryDirectory() as root:
        work = os.path.join(root, "work")
        t0 = time.perf_counter()
        out = _run_command(_stage_command(stage, processes, work, steps, log_every, extra), timeout,
                           f"{stage} on {processes} process(es)")
        run_s = time.perf_counter() - t0
        with open(os.path.join(work, "config.json")) as f:
            cfg = json.load(f)
        section = STAGES[stage][1]
        batch = int(cfg[section]["batch_size"])
        logs = read_metrics(os.path.join(work, "metrics.jsonl"))
        last = max((r["step"] for r in logs if "interval_s" in r), default=0)
        if last < log_every + steps:   # a SIGTERM stops a run early with a checkpoint, and exit status 0
            lines = [ln for ln in out.splitlines() if "stopped" in ln.lower()]
            raise SubprocessFailed(f"{stage} on {processes} process(es)", 0, out, reason=(
                f"the run stopped at step {last} of {log_every + steps}: "
                + (lines[-1].strip() if lines else failure_reason(out) or "no reason in its output")))
        speed = interval_throughput(logs, batch)
    return {"config": "tiny", "stage": stage, "processes": processes, "devices_per_process": 1,
            "global_batch": batch, **speed, "run_s": run_s}


def bench_training_processes(stages, process_counts, steps: int | None = None, repeats: int = 1,
                             extra: list | tuple = ()) -> list:
    """Each stage on each process count (``sage-jax launch --devices-per-process 1``),
    ``repeats`` times, the repeats interleaved (1, 2, 1, 2 processes, ...) so that a
    change in the machine's load falls on both; a row per (stage, processes) with the
    median of its runs' images/s and data-wait share, the runs kept in ``runs``, and
    ``ratio_to_1`` (its images/s over the 1-process row's). A run that fails gives a row
    with ``error`` (the reason) and ``stderr_tail``; the others go on."""
    steps = steps or PROCESS_STEPS
    runs: dict = {(s, p): [] for s in stages for p in process_counts}
    errors: dict = {}
    for rep in range(repeats):
        for stage in stages:
            for n in process_counts:
                if (stage, n) in errors:
                    continue
                try:
                    r = process_run(stage, n, steps, extra=extra)
                except Exception as e:   # noqa: BLE001 (any failure of one run is recorded; the rest go on)
                    errors[(stage, n)] = (e.record() if isinstance(e, SubprocessFailed)
                                          else {"error": f"{type(e).__name__}: {e}"})
                    print(f"  {stage:>18}, {n} process(es) x 1 device: did not finish: {errors[(stage, n)]['error']}",
                          flush=True)
                    continue
                runs[(stage, n)].append(r)
                print(f"  {stage:>18}, {n} process(es) x 1 device, batch {r['global_batch']}: "
                      f"{r['images_per_s']:.1f} img/s ({r['steps']} timed steps in {r['seconds']:.1f} s; intervals "
                      f"{min(r['interval_images_per_s']):.1f}-{max(r['interval_images_per_s']):.1f}), waiting for "
                      f"data {100 * r['data_wait_share']:.2f}%; first interval {r['first_interval_s']:.0f} s, "
                      f"run {r['run_s']:.0f} s" + (f" [repeat {rep + 1}]" if repeats > 1 else ""), flush=True)
    rows = []
    for stage in stages:
        for n in process_counts:
            base = {"config": "tiny", "stage": stage, "processes": n, "devices_per_process": 1}
            done = runs[(stage, n)]
            if (stage, n) in errors and not done:
                rows.append({**base, **errors[(stage, n)]})
                continue
            row = {**base, "global_batch": done[0]["global_batch"], "repeats": len(done),
                   "images_per_s": statistics.median(r["images_per_s"] for r in done),
                   "data_wait_share": statistics.median(r["data_wait_share"] for r in done),
                   "steps_per_run": done[0]["steps"], "runs": done}
            if (stage, n) in errors:   # a later repeat failed
                row.update(errors[(stage, n)])
            rows.append(row)
    for row in rows:
        one = next((r for r in rows if r["stage"] == row["stage"] and r["processes"] == 1 and "images_per_s" in r),
                   None)
        if one is not None and "images_per_s" in row and row["processes"] != 1:
            row["ratio_to_1"] = row["images_per_s"] / one["images_per_s"]
    print_process_table(rows)
    return rows


def _process_table_rows(rows) -> list[tuple]:
    out = []
    for r in rows:
        where = f"{r['processes']} x {r['devices_per_process']}"
        if "images_per_s" not in r:
            out.append((r["config"], r["stage"], where, "-", "-", "-", "did not finish: " + _short(r["error"])))
            continue
        ratio = f"x{r['ratio_to_1']:.2f}" if "ratio_to_1" in r else ("1" if r["processes"] == 1 else "-")
        out.append((r["config"], r["stage"], where, str(r["global_batch"]), f"{r['images_per_s']:.1f}",
                    f"{100 * r['data_wait_share']:.2f}%", ratio))
    return out


def print_process_table(rows):
    head = ("config", "stage", "processes x devices", "global batch", "img/s", "waiting for data", "vs 1 process")
    body = _process_table_rows(rows)
    widths = [max(len(str(r[i])) for r in body + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    print("\n  " + line(head))
    print("  " + line(tuple("-" * w for w in widths)))
    for r in body:
        print("  " + line(r))
    print("  note: " + MULTI_PROCESS_NOTE.format(cpus=os.cpu_count()) + "\n", flush=True)


def _print_training(r):
    warm = f", {r['compile_warm_s']:.1f} s from the persistent cache" if "compile_warm_s" in r else ""
    print(f"  {r['config']:>4} on {r['devices']} device(s), batch {r['batch']}: {r['steps_per_s']:.4f} steps/s, "
          f"{r['images_per_s']:.2f} img/s, waiting for data {100 * r['data_wait_share']:.1f}% ({r['steps']} timed "
          f"steps); compiling the steps took {r['compile_cold_s']:.1f} s{warm}; peak RSS "
          f"{r['peak_rss_mb'] / 1024:.1f} GB", flush=True)


def bench_refine(n: int = 64, steps: int = 20, reps: int = 2) -> dict:
    """ms per image and Adam step of refine_codes on the shipped tiny model, and of the
    same steps inside one lax.fori_loop (what refine_codes did first)."""
    import optax

    from sage_jax import inversion

    psp = checkpoints.load_psp(os.path.join(ROOT, "sage_jax", "assets", "tiny_model", "psp"))
    dec = psp.decoder
    images = jax.random.uniform(jax.random.PRNGKey(0), (n, dec.size, dec.size, 3), minval=-1.0, maxval=1.0)
    raw = psp.encode(images)
    offset = psp.code_offset()
    avg = jnp.asarray(offset, jnp.float32)[:dec.n_latent]

    @jax.jit
    def while_loop(codes):
        tx = optax.adam(inversion.DEFAULT_LR)

        def body(_, carry):
            c, state = carry
            g = jax.grad(inversion._refine_loss, argnums=4)(dec.module, dec.variables, avg, images, c, None, None)
            updates, state = tx.update(g, state, c)
            return optax.apply_updates(c, updates), state

        return jax.lax.fori_loop(0, steps, body, (codes, tx.init(codes)))[0]

    def ours():
        return inversion.refine_codes(dec, offset, images, raw, steps, chunk=n)

    def loop():
        return while_loop(raw[:, :dec.n_latent].astype(jnp.float32))

    out = {"images": n, "steps": steps}
    for name, fn in (("python_loop", ours), ("while_loop", loop)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out[f"{name}_first_call_s"] = time.perf_counter() - t0
        out[f"{name}_ms_per_image_step"] = 1000 * _best_time(lambda: jax.block_until_ready(fn()), reps) / (n * steps)
    out["speedup"] = out["while_loop_ms_per_image_step"] / out["python_loop_ms_per_image_step"]
    return out


def bench_bf16(batch: int = 2, reps: int = 2) -> dict:
    from sage_jax.images import to_uint8

    G = generator_256()
    w = _random_wplus(G, batch, seed=3)
    f32 = np.asarray(G(w, input_is_latent=True))
    Gb = G.astype(jnp.bfloat16)
    b16 = np.asarray(Gb(w, input_is_latent=True))
    levels = np.abs(to_uint8(b16).astype(np.int16) - to_uint8(f32).astype(np.int16))
    t32 = _best_time(lambda: G(w, input_is_latent=True).block_until_ready(), reps)
    t16 = _best_time(lambda: Gb(w, input_is_latent=True).block_until_ready(), reps)
    return {"batch": batch, "mean_abs_levels": float(levels.mean()), "max_abs_levels": int(levels.max()),
            "mean_abs_float": float(np.abs(np.clip(b16, -1, 1) - np.clip(f32, -1, 1)).mean()),
            "float32_images_per_s": batch / t32, "bfloat16_images_per_s": batch / t16}


# ----------------------------------------------------------------------------- report
def _target_table(results) -> list[tuple[str, str, str, str]]:
    """(figure, measured, target, met) rows for everything that has a target."""
    rows = []
    g = results.get("generator")
    if g:
        for r in g["rows"]:
            rows.append((f"generator 256 px, batch {r['batch']}", f"{100 * r['share_of_peak']:.0f}% of peak "
                         f"({r['gflops']:.0f} GFLOP/s, {r['images_per_s']:.2f} img/s)",
                         ">= 60% at batch 16" if r["batch"] == 16 else "-",
                         ("yes" if r["share_of_peak"] >= 0.6 else "NO") if r["batch"] == 16 else "-"))
    for r in results.get("sage", []):
        rows.append((f"SAGE generation {r['size']} (codes and images), vs generator alone",
                     f"x{r['ours_over_generator']:.2f} (x{r['end_to_end_over_generator']:.2f} incl. encoding the shot)",
                     ">= 0.8", "yes" if r["ours_over_generator"] >= 0.8 else "NO"))
        want = 20 if r["size"] == "tiny" else 2
        rows.append((f"SAGE generation {r['size']}, vs per-sample loop", f"x{r['speedup_over_loop']:.1f}",
                     ">= 20x" if r["size"] == "tiny" else "2-3x expected",
                     "yes" if r["speedup_over_loop"] >= want else "NO"))
    e = results.get("editing")
    if e:
        rows.append((f"editing math, {e['samples']} codes / {e['queries']} queries", f"{e['seconds']:.3f} s",
                     "< 1 s", "yes" if e["seconds"] < 1 else "NO"))
    for m in results.get("memory", []):
        rows.append((f"memory, sage-jax generate --n {m['images']} at 256 px (config-f, pSp IR-SE50)",
                     f"{m['peak_rss_mb'] / 1024:.2f} GB peak RSS", "< 4 GB",
                     "yes" if m["peak_rss_mb"] < 4096 else "NO"))
    grow = results.get("memory_growth")
    if grow:
        a, b = grow
        extra = b["peak_rss_mb"] - a["peak_rss_mb"]
        rows.append((f"memory growth, --n {a['images']} -> {b['images']} at 256 px (narrow model)",
                     f"{extra:+.0f} MB ({a['peak_rss_mb']:.0f} -> {b['peak_rss_mb']:.0f} MB)", "bounded", "-"))
        full = [m for m in results.get("memory", []) if m["images"] < b["images"]]
        if full:
            bound = full[0]["peak_rss_mb"] + max(extra, 0.0)
            rows.append((f"memory, --n {b['images']} at 256 px, full model: --n {full[0]['images']} + growth",
                         f"{bound / 1024:.2f} GB (bound from the two rows above)", "< 4 GB",
                         "yes" if bound < 4096 else "NO"))
    for r in results.get("compile", []):
        rows.append((f"first call, {r['what']}", f"{r['cold_cache_s']:.1f} s; {r['warm_cache_s']:.1f} s from cache "
                     f"({r['call_s']:.1f} s compiled)", "report", "-"))
    for r in results.get("training", []):
        if "error" in r:
            rows.append((f"training {r['config']}, {r['devices']} device(s)", "did not finish: " + _short(r["error"]),
                         "finishes", "NO"))
            continue
        warm = f"; {r['compile_warm_s']:.1f} s from cache" if "compile_warm_s" in r else ""
        rows.append((f"first training step, {r['config']}, {r['devices']} device(s)",
                     f"{r['compile_cold_s']:.1f} s{warm}", "report", "-"))
        rows.append((f"training {r['config']}, {r['devices']} device(s)",
                     f"{r['steps_per_s']:.3f} steps/s, {100 * r['data_wait_share']:.1f}% waiting for data",
                     "data not the bottleneck", "yes" if r["data_wait_share"] < 0.1 else "NO"))
    for r in results.get("training_processes", []):
        what = f"training {r['config']} {r['stage']}, {r['processes']} process(es) x {r['devices_per_process']} device"
        if "images_per_s" not in r:
            rows.append((what, "did not finish: " + _short(r["error"]), "finishes", "NO"))
            continue
        ratio = f"; x{r['ratio_to_1']:.2f} of 1 process" if "ratio_to_1" in r else ""
        rows.append((f"{what}, batch {r['global_batch']}", f"{r['images_per_s']:.1f} img/s, "
                     f"{100 * r['data_wait_share']:.2f}% waiting for data{ratio}", "report", "-"))
    b = results.get("bf16")
    if b:
        rows.append(("bfloat16 vs float32 images", f"{b['mean_abs_levels']:.2f} / 255",
                     "<= 1 / 255", "yes" if b["mean_abs_levels"] <= 1 else "NO"))
    for name, f in results.get("failed", {}).items():
        rows.append((f"section {name}", "did not finish: " + _short(f["error"]), "finishes", "NO"))
    return rows


def print_targets(results):
    rows = _target_table(results)
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows + [("figure", "measured", "target", "met")]) for i in range(4)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    print("\n" + line(("figure", "measured", "target", "met")))
    print(line(tuple("-" * w for w in widths)))
    for r in rows:
        print(line(r))


def _incomplete(results) -> list[str]:
    """The sections that did not finish: those that raised, and the training section
    when one of its runs did not finish."""
    names = list(results.get("failed", {}))
    runs = results.get("training", []) + results.get("training_processes", [])
    if "training" not in names and any("error" in r for r in runs):
        names.append("training")
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=None, help="run only these sections")
    p.add_argument("--quick", action="store_true",
                   help="smaller runs (under 10 min on 2 CPU cores): SAGE generation of 8 images at 256 px "
                        "(4 for the loop), one timed run of the generator at batch 16 and 64, 8 images for the "
                        "256 px memory figure and no growth run, tiny training in this process's devices only "
                        "(24 timed steps; no multi-process runs unless --train-stages is given)")
    p.add_argument("--sizes", nargs="+", default=["tiny", "256"], choices=["tiny", "256"],
                   help="SAGE generation sizes")
    p.add_argument("--n-images", type=int, default=128, help="images per class for SAGE generation (default 128)")
    p.add_argument("--chunk", type=int, default=None,
                   help="generator batch of our SAGE path (default 16; 4 at 256 px with --quick)")
    p.add_argument("--memory-images", type=int, default=None,
                   help="images that sage-jax generate writes with the full 256 px model for the memory figure "
                        "(default 32; 8 with --quick; 10000 takes about 2.5 hours on 2 CPU cores)")
    p.add_argument("--memory-growth-images", type=int, default=None,
                   help="images for the memory growth figure with the narrow 256 px model, against 32 "
                        "(default 10000, about 15 min on 2 CPU cores; 0 = skip, the --quick default)")
    p.add_argument("--train-stages", nargs="*", default=None, choices=list(STAGES),
                   help="training stages timed as 'sage-jax launch' runs of the tiny config on each of "
                        "--train-processes (default: all three, unless --quick or --train is given; "
                        "none when the flag has no value)")
    p.add_argument("--train-processes", type=int, nargs="+", default=[1, 2],
                   help="process counts (x 1 CPU device each) of the --train-stages runs (default 1 2)")
    p.add_argument("--train-repeats", type=int, default=1,
                   help="runs of each stage and process count, interleaved; the median is reported (default 1)")
    p.add_argument("--train", nargs="*", default=None, choices=["tiny", "256"],
                   help="GAN configs timed in fresh processes on this process's devices, with the compile time "
                        "cold and from the persistent cache (default: tiny with --quick, none otherwise; 256 px "
                        "takes an hour or more on a CPU)")
    p.add_argument("--train-devices", type=int, default=0,
                   help="also run the --train configs on this many simulated CPU devices (subprocess)")
    p.add_argument("--train-device-counts", type=int, nargs="+", default=None,
                   help="exactly these device counts for the --train configs (1 = this process's devices; more = "
                        "simulated CPU devices); overrides --train-devices")
    p.add_argument("--train-steps", type=int, default=None,
                   help=f"timed training steps per run (default: {PROCESS_STEPS} for the --train-stages runs, in "
                        f"whole logging intervals of {PROCESS_LOG_EVERY}; {TRAIN_STEPS} for the --train configs, "
                        "24 with --quick)")
    p.add_argument("--train-no-warm", action="store_true",
                   help="skip the second (warm-cache) process of the --train configs: speeds from the first, "
                        "no cache figure")
    p.add_argument("--skip-generation", action="store_true", help="only the training benchmark (= --only training)")
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Runs the sections; returns the exit status: 0 when every section finished, 1 when
    one did not (the table of what did finish is printed all the same, and the reasons
    are in it and in the JSON)."""
    args = parse_args(argv)
    only = set(args.only or SECTIONS)
    if args.skip_generation:
        only = {"training"}
    train_configs = args.train if args.train else (["tiny"] if args.quick and args.train is None else [])
    if args.train_stages is not None:
        train_stages = args.train_stages
    else:
        train_stages = [] if args.quick or args.train is not None else list(STAGES)

    results = {"machine": {"platform": platform.platform(), "devices": [str(d) for d in jax.devices()],
                           "cpus": os.cpu_count(), "jax": jax.__version__, "quick": args.quick}}
    t_start = time.perf_counter()
    work = tempfile.TemporaryDirectory()
    written: dict = {}

    def inputs():
        """The 256 px model files (written once, for the memory and compile sections)."""
        if not written:
            written.update(write_generation_inputs(work.name))
        return written

    section_s = results["section_seconds"] = {}
    failed = results["failed"] = {}
    last = [time.perf_counter()]

    def mark(name):
        now = time.perf_counter()
        section_s[name] = now - last[0]
        last[0] = now

    def section(name, fn):
        """Run a section; one that raises is recorded (its reason in the table, the
        traceback's tail in the JSON) and the next sections still run."""
        try:
            fn()
        except Exception as e:   # noqa: BLE001
            import traceback

            record = e.record() if isinstance(e, SubprocessFailed) else {"error": f"{type(e).__name__}: {e}"}
            record["traceback"] = traceback.format_exc()[-4000:]
            failed[name] = record
            print(f"{name}: did not finish: {record['error']}", flush=True)
        mark(name)

    state: dict = {"peak": None}

    def run_peak():
        results["peak"] = bench_peak()
        state["peak"] = results["peak"]["gflops"]
        print(f"float32 matmul peak (jnp.dot {results['peak']['n']}^2): {state['peak']:.1f} GFLOP/s", flush=True)

    def run_generator():
        if state["peak"] is None:
            raise RuntimeError("no matmul peak to compare with (the peak section did not finish)")
        print("StyleGAN2 forward, 256 px config-f, from W+:", flush=True)
        results["generator"] = bench_generator((1, 4, 16, 64), state["peak"], quick=args.quick)

    def run_sage():
        # --quick at 256 px: 8 images in chunks of 4 (the generator section's batch 4 is the
        # comparison), 4 images for the loop
        n_images = {"tiny": args.n_images, "256": 8 if args.quick else args.n_images}
        chunks = {"tiny": args.chunk or 16, "256": args.chunk or (4 if args.quick else 16)}
        print("SAGE generation, 1-shot:", flush=True)
        rates = {r["batch"]: r["images_per_s"] for r in results.get("generator", {}).get("rows", [])}
        results["sage"] = bench_sage(args.sizes, n_images, chunks, {"256": 4} if args.quick else None, rates)

    def run_editing():
        results["editing"] = e = bench_editing()
        print(f"editing math: {e['samples']} codes over {e['queries']} queries in {e['seconds']:.3f} s "
              f"(first call {e['first_call_s']:.1f} s)", flush=True)

    def run_memory():
        n_mem = args.memory_images or (8 if args.quick else 32)
        n_growth = args.memory_growth_images if args.memory_growth_images is not None else (0 if args.quick else 10_000)
        results["memory"] = [bench_memory(n_mem, "256", inputs())]
        if n_growth:
            narrow = write_generation_inputs(os.path.join(work.name, "narrow"), "256-narrow")
            results["memory_growth"] = [bench_memory(n, "256-narrow", narrow) for n in (32, n_growth)]
        for m in results["memory"] + results.get("memory_growth", []):
            print(f"memory: sage-jax generate wrote {m['written']} images at 256 px ({m['size']}) in "
                  f"{m['seconds']:.0f} s; peak RSS {m['peak_rss_mb']:.0f} MB", flush=True)

    def run_compile():
        print("compilation (fresh processes):", flush=True)
        results["compile"] = bench_compile(inputs())

    def run_training():
        if train_stages:
            print(f"training throughput, tiny config, sage-jax launch with {' / '.join(map(str, args.train_processes))}"
                  f" process(es) x 1 device:", flush=True)
            results["training_processes"] = bench_training_processes(train_stages, args.train_processes,
                                                                     args.train_steps, args.train_repeats)
        if train_configs:
            print("GAN training in this process's devices:", flush=True)
            counts = args.train_device_counts or [1] + ([args.train_devices] if args.train_devices else [])
            steps = args.train_steps or (24 if args.quick else None)
            results["training"] = bench_training(train_configs, counts, steps, warm=not args.train_no_warm)

    def run_refine():
        results["refine"] = r = bench_refine()
        print(f"refinement, tiny model, {r['images']} images x {r['steps']} steps: "
              f"{r['python_loop_ms_per_image_step']:.2f} ms per image and step (one jitted step per call), "
              f"{r['while_loop_ms_per_image_step']:.2f} ms as one lax.fori_loop ({r['speedup']:.1f}x)", flush=True)

    def run_bf16():
        results["bf16"] = b = bench_bf16(reps=1 if args.quick else 2)
        print(f"bfloat16: mean |diff| {b['mean_abs_levels']:.2f} of 255 levels (max {b['max_abs_levels']}), "
              f"{b['bfloat16_images_per_s']:.2f} img/s vs float32 {b['float32_images_per_s']:.2f}", flush=True)

    runs = {"peak": run_peak, "generator": run_generator, "sage": run_sage, "editing": run_editing,
            "memory": run_memory, "compile": run_compile, "training": run_training, "refine": run_refine,
            "bf16": run_bf16}
    for name in SECTIONS:
        if name in only or (name == "peak" and "generator" in only):
            section(name, runs[name])
    work.cleanup()
    results["total_seconds"] = time.perf_counter() - t_start
    print_targets(results)
    print(f"\ntotal {results['total_seconds']:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in section_s.items())
          + ")")
    if results.get("training_processes"):
        print("note: " + MULTI_PROCESS_NOTE.format(cpus=os.cpu_count()))
    incomplete = _incomplete(results)
    results["incomplete_sections"] = incomplete
    results["exit_status"] = 1 if incomplete else 0
    if incomplete:
        print(f"did not finish: {', '.join(incomplete)} (reasons in the table above)", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results["exit_status"]


if __name__ == "__main__":
    sys.exit(main())
