"""ops.memory: freed host memory kept for reuse (glibc), and the first training step
turning it on. Each case runs in a fresh interpreter: the setting is process-wide."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the setting is glibc's; elsewhere keep_freed_memory does nothing")

# Page faults while a 64 MB array is written, after one of the same size was freed:
# glibc's default maps it afresh (every page faulted in again), kept memory reuses
# the freed pages.
FAULTS = """
import json, resource, sys
import numpy as np
from minicnn.ops import memory
kept = {keep}
if kept:
    assert memory.keep_freed_memory() and memory.keeping_freed_memory()
a = np.ones(1 << 24, np.float32)  # 64 MB: above glibc's largest mmap threshold
del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = np.ones(1 << 24, np.float32)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({{"faults": faults, "kept": memory.keeping_freed_memory()}}))
"""


def run(code: str, env: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MINICNN_KEEP_FREED_MEMORY": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, env=env, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_kept_memory_is_reused_without_page_faults():
    default = run(FAULTS.format(keep=False))
    kept = run(FAULTS.format(keep=True))
    # 64 MB is at least 32 faults (2 MB huge pages), 16,384 with 4 KB pages
    assert default["faults"] >= 32 and not default["kept"]
    assert kept["faults"] < 8 and kept["kept"]


def test_give_back_trims_the_heap_again():
    code = FAULTS.format(keep=True).replace(
        "a = np.ones", "memory.give_back_freed_memory()\na = np.ones")
    result = run(code)
    assert result["faults"] >= 32 and not result["kept"]


def test_give_back_maps_large_blocks_again():
    # A freed 1 MB block with another after it (so no trim can reach it) is reused
    # from the heap while maps are off; given back, the next one is a fresh map.
    code = """
    import json, resource
    import numpy as np
    from minicnn.ops import memory
    assert memory.keep_freed_memory()
    memory.give_back_freed_memory()
    a = np.ones(1 << 18, np.float32)
    guard = np.ones(1 << 18, np.float32)
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = np.ones(1 << 18, np.float32)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"faults": faults, "kept": memory.keeping_freed_memory()}))
    """
    result = run(code)
    assert result["faults"] >= 64 and not result["kept"]  # 256 pages of 4 KB


STEP = """
import json
import numpy as np
import minicnn
from minicnn.layers import Dense
from minicnn.ops import memory
model = minicnn.models.Sequential([Dense(3, input_shape=(4,), activation="softmax")])
model.compile(loss="categorical_crossentropy", optimizer="sgd")
before = memory.keeping_freed_memory()
model.train_on_batch(np.ones((2, 4), np.float32), np.eye(3, dtype=np.float32)[[0, 1]])
print(json.dumps({"before": before, "after": memory.keeping_freed_memory()}))
"""


def test_the_first_training_step_keeps_freed_memory():
    assert run(STEP) == {"before": False, "after": True}


@pytest.mark.parametrize("value", ["0", "off"])
def test_the_environment_can_turn_it_off(value):
    assert run(STEP, {"MINICNN_KEEP_FREED_MEMORY": value}) == {"before": False, "after": False}
