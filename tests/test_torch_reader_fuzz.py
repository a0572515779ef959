"""Mutation fuzzing of the .pt reader over the tiny fixture files: every mutated input
either loads or raises the reader's own CheckpointError with a message naming the
file; never another exception, a crash, a hang or a runaway allocation.

Mutations hit the whole file (zip headers, the legacy stream) and, for zip files, the
bytes of one member re-zipped with a valid CRC (so the pickle and the storages are
really reached rather than rejected by the CRC check). Deterministic: a fixed number of
derandomized examples per fixture.
"""

import io
import resource
import signal
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixture_utils import fixture
from sage_jax.checkpoints import CheckpointError, read_torch_bytes

FIXTURES = ["tiny_rosinality_ckpt.pt", "tiny_rosinality_ckpt_legacy.pt", "tiny_age_layout_ckpt.pt"]
TIME_LIMIT = 5  # seconds per input; the reader's bounds keep real cases below 0.2 s
MEMORY_LIMIT_MB = 512  # growth of the process's peak RSS allowed per input (the files are 2 MB)
_DATA = {}


def _data(name):
    if name not in _DATA:
        with open(fixture(name), "rb") as f:
            _DATA[name] = f.read()
    return _DATA[name]


_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
                b"(", b")", b".", b"R", b"b", b"h", b"q", b"r", b"\x94", b"\x95", b"\x93", b"]", b"}",
                b"\x85", b"\x86", b"\x87", b"e", b"s", b"u", b"a", b"0", b"2", b"P", b"Q"]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("set"), st.floats(0, 1, exclude_max=True), st.sampled_from(_INTERESTING)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(_INTERESTING)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 64)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("duplicate"), st.floats(0, 1, exclude_max=True), st.integers(1, 256)),
    # a zip header field (flags, method, sizes) of the next local or central header
    st.tuples(st.just("zipfield"), st.floats(0, 1, exclude_max=True),
              st.tuples(st.sampled_from([6, 8, 18, 22, 26]), st.sampled_from([0, 1, 8, 12, 14, 99, 0xFFFF]))),
)


def _mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, where, arg in ops:
        if not b and kind != "insert":
            continue
        i = min(int(where * len(b)), max(len(b) - 1, 0))
        if kind == "flip":
            b[i] ^= 1 << arg
        elif kind == "set":
            b[i:i + len(arg)] = arg
        elif kind == "insert":
            b[i:i] = arg
        elif kind == "delete":
            del b[i:i + arg]
        elif kind == "truncate":
            del b[int(where * len(b)):]
        elif kind == "duplicate":
            b[i:i] = b[i:i + arg]
        elif kind == "zipfield":
            off, value = arg
            j = min((k for k in (b.find(b"PK\x03\x04", i), b.find(b"PK\x01\x02", i)) if k >= 0), default=-1)
            if j >= 0:
                off += 2 if b[j + 2:j + 4] == b"\x01\x02" else 0
                b[j + off:j + off + 2] = value.to_bytes(2, "little")
    return bytes(b)


def _rezip(data: bytes, member_choice: float, ops) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    infos = src.infolist()
    pkl = [i for i, info in enumerate(infos) if info.filename.endswith("data.pkl")]
    # half the time the pickle, otherwise any member (storages, byteorder, version)
    target = pkl[0] if member_choice < 0.5 else int((member_choice - 0.5) * 2 * len(infos)) % len(infos)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for i, info in enumerate(infos):
            body = src.read(info)
            zf.writestr(info.filename, _mutate(body, ops) if i == target else body)
    return out.getvalue()


class _Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise _Hang()


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _check(data: bytes, name: str):
    previous = signal.signal(signal.SIGALRM, _alarm)
    peak = _peak_mb()
    signal.alarm(TIME_LIMIT)
    try:
        read_torch_bytes(data, name)
    except CheckpointError as e:
        msg = str(e)
        assert msg.startswith(name + ": ") and len(msg) > len(name) + 5, msg
    except _Hang:
        pytest.fail(f"reader ran over {TIME_LIMIT}s on a mutated {name}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    grew = _peak_mb() - peak
    assert grew < MEMORY_LIMIT_MB, f"reading a mutated {name} raised peak memory by {grew:.0f} MB"


FUZZ = settings(max_examples=100, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", FIXTURES)
@FUZZ
@given(whole=st.booleans(), member=st.floats(0, 1, exclude_max=True),
       ops=st.lists(mutation, min_size=1, max_size=6))
def test_mutated_checkpoints_load_or_raise_checkpoint_error(name, whole, member, ops):
    data = _data(name)
    if whole or not zipfile.is_zipfile(io.BytesIO(data)):
        mutated = _mutate(data, ops)
    else:
        mutated = _rezip(data, member, ops)
    _check(mutated, name)
