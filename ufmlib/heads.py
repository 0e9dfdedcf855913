"""The head layers of any trained classifier: found by name, observed by hooks, differentiated.

What :func:`ufmlib.analysis.analyze_classifier` needs from a ``torch.nn.Module`` it knows nothing
about: which modules are the head layers (:func:`resolve_head`), their inputs and outputs on a
batch (:func:`capture_features`, forward hooks), which activation sits between them
(:func:`infer_activation`), the Jacobians of the logits with respect to a layer's output
(:func:`downstream_jacobians`, a hook that adds a zero perturbation) and the top eigenpairs of
the fit-term Hessian over all head weights (:func:`head_top_eigenpairs`).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .autodiff import load_forward_ad
from .lanczos import top_eigenpairs
from .networks import network_fit_loss
from .spectrum import Spectrum

__all__ = ["resolve_head", "capture_features", "infer_activation", "downstream_jacobians", "head_top_eigenpairs"]

F64 = torch.float64


def resolve_head(model: nn.Module, head_layers) -> list[str]:
    """The module names of ``head_layers`` (names or modules of ``model``), each with a 2-D weight."""
    if isinstance(head_layers, (str, nn.Module)) or not isinstance(head_layers, Iterable):
        raise ValueError("head_layers must be a list of module names or modules")
    head_layers = list(head_layers)
    if not head_layers:
        raise ValueError("head_layers must name at least one layer")
    modules = dict(model.named_modules())
    names_by_id = {id(m): n for n, m in model.named_modules()}
    names = []
    for i, h in enumerate(head_layers):
        if isinstance(h, str):
            if h not in modules or h == "":
                raise ValueError(f"head_layers[{i}] = {h!r} is not the name of a submodule of model")
            name = h
        elif isinstance(h, nn.Module):
            if id(h) not in names_by_id or names_by_id[id(h)] == "":
                raise ValueError(f"head_layers[{i}] is not a submodule of model")
            name = names_by_id[id(h)]
        else:
            raise ValueError(f"head_layers[{i}] must be a module name or a module; got {type(h).__name__}")
        w = getattr(modules[name], "weight", None)
        if not isinstance(w, Tensor) or w.ndim != 2:
            raise ValueError(f"head_layers[{i}] ({name!r}) must have a 2-D weight (e.g. nn.Linear)")
        names.append(name)
    if len(set(names)) != len(names):
        raise ValueError(f"head_layers must be distinct; got {names}")
    return names


def capture_features(model: nn.Module, names: list[str], x: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """Inputs and outputs of every head layer (``(N, d)`` each) and the model output."""
    modules = dict(model.named_modules())
    ins: dict[str, Tensor] = {}
    outs: dict[str, Tensor] = {}

    def hook(name):
        def fn(mod, args, out):
            if name in ins:
                raise ValueError(f"head layer {name!r} is called more than once in one forward pass")
            ins[name], outs[name] = args[0].detach(), out.detach()
        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            z = model(x)
    finally:
        for h in handles:
            h.remove()
    for n in names:
        if n not in ins:
            raise ValueError(f"head layer {n!r} was not called by model(x)")
        if ins[n].ndim != 2 or outs[n].ndim != 2:
            raise ValueError(f"head layer {n!r} must map (N, d_in) features to (N, d_out); "
                             f"got {tuple(ins[n].shape)} -> {tuple(outs[n].shape)}")
    if not isinstance(z, Tensor) or z.ndim != 2:
        raise ValueError(f"model(x) must return (N, K) logits; got {getattr(z, 'shape', type(z).__name__)}")
    return [ins[n] for n in names], [outs[n] for n in names], z.detach()


def infer_activation(ins: list[Tensor], outs: list[Tensor]) -> str:
    """``"linear"``, ``"relu"``, ``"n/a"`` (one layer) or ``"other"``: what maps each head layer's output to the next one's input."""
    if len(ins) == 1:
        return "n/a"
    found = set()
    for out, nxt in zip(outs[:-1], ins[1:]):
        if out.shape != nxt.shape:
            return "other"
        tol = 1e-10 * max(float(out.abs().max()), 1e-300)
        if float((out - nxt).abs().max()) <= tol:
            found.add("linear")
        elif float((torch.relu(out) - nxt).abs().max()) <= tol:
            found.add("relu")
        else:
            return "other"
    if found == {"linear", "relu"}:  # a ReLU whose inputs happen to be non-negative looks linear
        return "relu"
    return found.pop()


def downstream_jacobians(model: nn.Module, name: str, x: Tensor, K: int, d_out: int) -> Tensor:
    """``B_i = ∂z_i/∂h_i`` for the output ``h`` of layer ``name``: ``(N, K, d_out)``.

    A hook adds a zero perturbation ``δ`` to the layer's output; row ``k`` of every ``B_i`` is
    ``∂(Σ_i z_{ik})/∂δ_i`` (samples do not interact in eval mode): ``K`` backward passes.
    """
    module = dict(model.named_modules())[name]
    delta = torch.zeros(x.shape[0], d_out, dtype=x.dtype, device=x.device, requires_grad=True)
    handle = module.register_forward_hook(lambda mod, args, out: out + delta)
    try:
        with torch.enable_grad():
            z = model(x)
            rows = [torch.autograd.grad(z[:, k].sum(), delta, retain_graph=k < K - 1, allow_unused=True)[0]
                    for k in range(K)]
    finally:
        handle.remove()
    rows = [torch.zeros_like(delta) if r is None else r for r in rows]
    return torch.stack(rows, dim=1).detach()


def head_top_eigenpairs(net: nn.Module, names: list[str], x: Tensor, y: Tensor, *, loss: str, k: int,
                        seed: int) -> Spectrum:
    """Top ``k`` eigenpairs of the fit-term Hessian over all head weights, with the solver's report.

    Block Lanczos (:func:`ufmlib.lanczos.top_eigenpairs`) on ``v ↦ ∇²ℓ v`` (jvp of grad through
    :func:`torch.func.functional_call`); the flat parameter is ``[vec(W_1); ...; vec(W_L)]``. The
    result carries ``converged`` and the residual norms.
    """
    modules = dict(net.named_modules())
    pnames = [f"{n}.weight" for n in names]
    shapes = [modules[n].weight.shape for n in names]
    sizes = [modules[n].weight.numel() for n in names]
    theta = torch.cat([modules[n].weight.detach().reshape(-1) for n in names])

    def f(t: Tensor) -> Tensor:
        parts = {p: s.reshape(shape) for p, s, shape in zip(pnames, torch.split(t, sizes), shapes)}
        return network_fit_loss(functional_call(net, parts, (x,)), y, loss)

    grad = torch.func.grad(f)

    def matvec(v: Tensor) -> Tensor:
        return torch.func.jvp(grad, (theta,), (v,))[1]

    load_forward_ad()
    return top_eigenpairs(matvec, dim=theta.numel(), k=k, seed=seed, dtype=F64, device=theta.device)
