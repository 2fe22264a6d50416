"""The benchmark scripts still run, at a tiny scale, and print what the performance page quotes.

Timings are not checked here (the machines are shared and noisy; the scripts print ratios measured
in one run for a person to read). What is checked is what must hold at any scale: each script exits
cleanly, prints every section, the reversible run is exact and its buffer holds the bits the entropy
bound allows, and every ratio printed is a finite positive number.
"""

from __future__ import annotations

import math
import pathlib
import re
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
NUMBER = r"[-+]?\d+(?:\.\d+)?"


def _run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _ratios(pattern: str, text: str) -> list[float]:
    found = [float(x) for x in re.findall(pattern, text)]
    assert found, f"no match for {pattern!r} in:\n{text}"
    assert all(math.isfinite(x) and x > 0 for x in found), found
    return found


def test_towers_benchmark():
    out = _run("towers.py", "--steps", "2", "--repeats", "1", "--max-height", "2")
    assert out.count("## ") == 2  # both workloads
    for hd, plain in (("sgd_hd", "optax.sgd"), ("adam_hd", "optax.adam")):
        assert len(_ratios(rf"{hd}\s+/ {re.escape(plain)}\s*: ({NUMBER})", out)) == 2
        assert len(_ratios(rf"hand-written minimal {hd}: ({NUMBER})", out)) == 2
        assert len(_ratios(rf"minimal {hd}: {NUMBER} .*? rule \(storage='linear'\): ({NUMBER})", out)) == 2
    assert len(re.findall(r"height 2: +" + NUMBER + " ms", out)) == 4  # sgd and adam towers, twice
    assert len(re.findall(r"first level: " + NUMBER + r" \(target <= 0\.10: (?:holds|NOT MET)\)", out)) == 4


def test_reversible_benchmark():
    out = _run("reversible.py", "--steps", "100", "--run-up-to", "100", "--momenta", "0.5", "0.98",
               "--repeats", "1")
    assert "exact reversal: True" in out
    _ratios(rf"reversible / training = ({NUMBER})", out)
    _ratios(rf"\(plain call\), ({NUMBER})", out)
    _ratios(rf"jitted: ({NUMBER})", out)  # the other program (one loop here), and 32-bit weights
    _ratios(rf"against the 64-bit weights directly \(the same ABBA pairing\), ({NUMBER})", out)
    _ratios(rf"= 1 \+ ({NUMBER})", out)  # the float work alone
    # memory at T = 100, the weights stored in 64 and in 32 bits: state + buffer against the float32 and
    # float64 trajectories
    rows = {}
    for bits in (64, 32):
        row = re.search(rf"^\s+100\s+{bits}\s+({NUMBER})\s+({NUMBER})\s+(\d+)\s+({NUMBER}) \(\d+ s\)\s+({NUMBER})"
                        rf"\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})$", out, re.M)
        assert row, out
        state, buffer, _, held, _, _, traj32, ratio32, traj64, ratio64 = map(float, row.groups())
        assert ratio32 == pytest.approx(traj32 / (state + buffer), rel=0.01)
        assert ratio64 == pytest.approx(2 * ratio32, rel=0.01)
        assert held == pytest.approx(math.log2(1 / 0.9), abs=1e-4)  # the memory table runs at 0.9
        rows[bits] = state, buffer
    assert rows[32][0] == pytest.approx(0.75 * rows[64][0], rel=0.02)  # 4 + 8 bytes against 8 + 8
    assert rows[32][1] == rows[64][1]
    # the buffer against the entropy bound: at most 1.1 log2(1/g) + 0.01 bits per weight and step
    for g in (0.5, 0.98):
        row = re.search(rf"^\s+{g}\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})$", out, re.M)
        assert row, out
        bits, bound, _ = map(float, row.groups())
        assert bound == pytest.approx(math.log2(2**16 / round(g * 2**16)), abs=1e-4)
        assert bound * 0.999 <= bits <= 1.1 * bound + 0.01


def test_reversal_exactness_benchmark():
    out = _run("reversal_exactness.py", "--sizes", "4,3", "--batches", "5")
    assert re.search(r"^\s+float32\s+4,3\s+5\s+True\s+True$", out, re.M), out
    assert "not exact: two loops 0 of 2, one loop 0 of 2" in out, out  # on a CPU neither program fails


def test_checkpoint_memory_benchmark():
    out = _run("checkpoint_memory.py", "--steps", "100")
    assert re.search(r"100 Reverse\(structured=True\)\s+" + NUMBER, out), out
    assert re.search(r"100 Checkpointed\(every=None, structured=True\)\s+" + NUMBER + r"\s+" + NUMBER, out), out


def test_hypergrad_speed_benchmark(tmp_path):
    out = _run("hypergrad_speed.py", "--repeats", "1", "--json", str(tmp_path / "speed.json"))
    assert len(_ratios(rf"generic / hand-written\s+= ({NUMBER})", out)) == 2  # batch 100 and 500
    assert (tmp_path / "speed.json").stat().st_size > 0


def test_vs_pytorch_benchmark():
    pytest.importorskip("torch")
    pytest.importorskip("higher")
    out = _run("vs_pytorch.py", "--repeats", "1")
    differences = _ratios(rf"hypergradient relative difference to hgrad ({NUMBER}e[-+]\d+)", out)
    assert len(differences) == 2 and max(differences) < 1e-4  # the same hypergradient, in float32
    assert len(_ratios(rf"speed-up of hgrad Momentum over [^:]+: ({NUMBER})x", out)) == 2
