"""The peers benchmark still runs every method it compares (its APIs and the operator it shares),
on a small dense operator with a known spectrum, each against ``torch.linalg.eigvalsh``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from ufmlib.operators import dense_operator

ROOT = Path(__file__).resolve().parents[1]


def _peers(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("peers_benchmark", ROOT / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "peers_benchmark", module)
    spec.loader.exec_module(module)
    return module


def test_every_compared_method_runs_and_is_scored_against_the_reference(monkeypatch):
    peers = _peers(monkeypatch)
    monkeypatch.setattr(peers, "K_TOP", 6)
    monkeypatch.setattr(peers, "K_POWER", 2)
    X = torch.randn(300, 120, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    A = X.T @ X / 300
    ref = torch.linalg.eigvalsh(A).flip(0)
    op = dense_operator(A)
    rows = {}
    for label, fn in peers.methods(op, budget=60):
        n, calls, seconds, (vals, converged) = peers.run(op, fn)
        rows[label] = (n, calls, peers.rel_error(vals, ref), converged)
        assert n >= calls >= 1 and seconds >= 0
    assert set(rows) >= {"ufmlib top_eigenpairs (default)", "scipy eigsh (ARPACK)"}
    for label, (n, calls, err, converged) in rows.items():
        if "power" not in label:
            assert converged and err < 1e-9, (label, err)
    default = rows["ufmlib top_eigenpairs (default)"]
    assert default[1] < default[0]  # a block is one call
