"""Tests for ufmlib.operators and the operators of the Hessian routes: every product is compared
with a dense float64 matrix (torch.kron, the dense autodiff Hessian), counters are exact, and a
block is one call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ufmlib.config import UFMConfig
from ufmlib.full_hessian import full_hessian_autodiff, full_hvp, full_hvp_autodiff, full_operator
from ufmlib.hessian import layer_hessian_autodiff, layer_operator
from ufmlib.lanczos import eigsh_reference, top_eigenpairs
from ufmlib.model import init_params
from ufmlib.operators import LinearOperator, as_operator, dense_operator, gram_operator, kronecker_operator
from ufmlib.train import train

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _sym(n, seed):
    A = torch.randn(n, n, generator=_gen(seed), dtype=F64)
    return (A + A.T) / 2


def test_block_is_one_call_and_counts_columns():
    A = _sym(30, 0)
    calls = []
    op = LinearOperator(lambda V: (calls.append(V.shape[1]), A @ V)[1], 30, name="A")
    V = torch.randn(30, 7, generator=_gen(1), dtype=F64)
    torch.testing.assert_close(op @ V, A @ V, rtol=0, atol=1e-14)
    torch.testing.assert_close(op @ V[:, 0], A @ V[:, 0], rtol=0, atol=1e-14)
    assert calls == [7, 1] and op.num_products == 8 and op.num_calls == 2
    assert op.shape == (30, 30) and op.dtype == F64 and op.device.type == "cpu"
    op.reset_count()
    assert op.num_products == op.num_calls == 0


def test_vector_function_is_applied_column_by_column():
    A = _sym(12, 2)
    op = as_operator(lambda v: A @ v, dim=12)
    V = torch.randn(12, 3, generator=_gen(3), dtype=F64)
    torch.testing.assert_close(op @ V, A @ V, rtol=0, atol=1e-14)
    assert op.num_products == 3 and op.num_calls == 3


def test_algebra_dense_and_scipy():
    A, B = _sym(20, 4), _sym(20, 5)
    a, b = dense_operator(A, name="A"), dense_operator(B, name="B")
    torch.testing.assert_close((a + b).dense(), A + B, rtol=0, atol=1e-14)
    torch.testing.assert_close((a - 2.0 * b).dense(), A - 2 * B, rtol=0, atol=1e-14)
    torch.testing.assert_close((-a).dense(chunk=3), -A, rtol=0, atol=0)
    sp = a.to_scipy()
    x = np.arange(20.0)
    np.testing.assert_allclose(sp @ x, (A @ torch.arange(20.0, dtype=F64)).numpy(), rtol=0, atol=1e-12)
    X = np.ones((20, 2))
    np.testing.assert_allclose(sp.matmat(X), (A @ torch.ones(20, 2, dtype=F64)).numpy(), rtol=0, atol=1e-12)


def test_kronecker_operator_is_the_row_major_kronecker_product():
    """``P ⊗ Q`` with vec(a b^T) = a ⊗ b (row-major): the dense matrix is torch.kron(P, Q)."""
    P, Q = _sym(4, 6), _sym(5, 7)
    op = kronecker_operator(P, Q)
    torch.testing.assert_close(op.dense(), torch.kron(P, Q), rtol=0, atol=1e-13)


def test_gram_operator():
    R = torch.randn(3, 15, generator=_gen(8), dtype=F64)
    torch.testing.assert_close(gram_operator(R, scale=0.5).dense(), 0.5 * R.T @ R, rtol=0, atol=1e-14)


@pytest.mark.parametrize("call, match", [
    (lambda: LinearOperator("x", 3), "matmat"),
    (lambda: LinearOperator(lambda V: V, 0), "dim"),
    (lambda: dense_operator(torch.ones(2, 3)), "square"),
    (lambda: dense_operator(torch.tensor([[0.0, 1.0], [0.0, 0.0]])), "symmetric"),
    (lambda: as_operator(lambda v: v), "dim"),
    (lambda: as_operator(dense_operator(torch.eye(3)), dim=4), "dim"),
    (lambda: dense_operator(torch.eye(3)) @ torch.ones(4, 2), "shape"),
    (lambda: LinearOperator(lambda V: V[:1], 3) @ torch.ones(3, 2), "must map"),
    (lambda: dense_operator(torch.eye(3)) + dense_operator(torch.eye(4)), "sizes"),
])
def test_errors_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- Hessian operators
CASES = [("linear", "mse"), ("relu", "mse"), ("linear", "ce"), ("relu", "ce")]


@pytest.mark.parametrize("activation, loss", CASES)
@pytest.mark.parametrize("include_H", [False, True])
def test_full_hvp_written_out_equals_autodiff(activation, loss, include_H):
    """The R-operator written out (full_hvp) against the dense autodiff Hessian and the autodiff
    products (jvp of grad), on vectors and on blocks, regularised or not."""
    cfg = UFMConfig(K=3, n=4, d=5, L=4, activation=activation, loss=loss, lambda_W=0.01, lambda_H=0.02, seed=1)
    params = train(cfg, lr=0.1, epochs=20, snapshot_epochs=[], progress=False).params
    for regularised in (False, True):
        H = full_hessian_autodiff(params, cfg, include_H=include_H, regularised=regularised)
        mv, dim = full_hvp(params, cfg, include_H=include_H, regularised=regularised)
        ad, dim_ad = full_hvp_autodiff(params, cfg, include_H=include_H, regularised=regularised)
        assert dim == dim_ad == H.shape[0]
        V = torch.randn(dim, 5, generator=_gen(2), dtype=F64)
        scale = H.abs().max().item()
        assert (mv(V) - H @ V).abs().max().item() <= 1e-13 * scale
        assert (mv(V[:, 1]) - H @ V[:, 1]).abs().max().item() <= 1e-13 * scale
        assert (mv(V) - ad(V)).abs().max().item() <= 1e-13 * scale


def test_full_and_layer_operators_multiply_a_block_in_one_call():
    cfg = UFMConfig(K=3, n=4, d=6, L=3, activation="relu", loss="ce", seed=4)
    params = init_params(cfg)
    op = full_operator(params, cfg)
    torch.testing.assert_close(op.dense(chunk=64), full_hessian_autodiff(params, cfg), rtol=0, atol=1e-13)
    assert op.num_calls == -(-op.dim // 64)
    lop = layer_operator(params, cfg, 2)
    torch.testing.assert_close(lop.dense(), layer_hessian_autodiff(params, cfg, 2), rtol=0, atol=1e-13)
    assert lop.num_calls == 1 and lop.num_products == lop.dim


def test_solvers_take_operators_and_count_their_products():
    A = _sym(80, 9)
    op = dense_operator(A)
    ref = torch.linalg.eigvalsh(A).flip(0)[:6]
    res = top_eigenpairs(op, k=6, seed=0, verify=False)
    assert res.converged and res.num_matvecs == op.num_products and op.num_calls < op.num_products
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-9, atol=1e-12)
    before = op.num_products
    e = eigsh_reference(op, k=6, tol=1e-12, verify=False)
    assert e.num_matvecs == op.num_products - before
    torch.testing.assert_close(e.eigenvalues, ref, rtol=1e-9, atol=1e-12)
