"""Trustworthy regeneration: the same inputs give the same numbers, and a failure costs nothing else.

* **Determinism.** The ``optimum`` notebook (parameters of the ``smoke`` profile) is executed
  twice through :func:`ufmlib.book.regenerate.regenerate` with ``force=True``; every glued value,
  every recorded check, every cell output and every figure file must be identical (float64,
  one thread per kernel: ``ufmlib.book.execute._kernel_environment`` and
  :func:`ufmlib.runtime.configure`). Training in float32 is repeatable to a stated tolerance
  (``FLOAT32_RTOL``), float64 training exactly.
* **Failures.** A notebook that diverges (``TrainingDivergedError``), runs out of memory
  (``MemoryError``) or is interrupted (SIGINT delivered to its kernel, as Jupyter's "interrupt"
  does) fails alone: the other notebook's output is written, the failure is listed in the
  printed table and in ``status.json``, nothing partial is left, and a second run without
  ``force`` re-runs only what is missing (the good notebook is "up to date").
* **Ctrl-C of the run itself** (a ``KeyboardInterrupt`` in the parent while a notebook runs) leaves
  the finished outputs intact and the next run resumes with the missing notebook.

The notebooks run in a copy of the repository's sources in a temporary folder (as in
``test_book.py``); the repository's own ``outputs/`` are left alone.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import io
import json
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from ufmlib import runtime
from ufmlib.book import profiles
from ufmlib.book.regenerate import regenerate
from ufmlib.config import UFMConfig
from ufmlib.train import train

from booktools import FRONT

ROOT = Path(__file__).resolve().parents[1]
FLOAT32_RTOL = 1e-6
"""Tolerance of two float32 runs on the same machine (stated; on the CPU they agree bitwise)."""

UNSTABLE = FRONT + textwrap.dedent(
    """\

    # A notebook that can fail

    ```{code-cell} ipython3
    :tags: [parameters]

    mode: str = "ok"  # ok, diverge, out-of-memory or interrupt
    seed: int = 0  # seed
    device: str = "cpu"  # device
    ```

    ```{code-cell} ipython3
    from ufmlib.notebook import glue

    if mode == "diverge":
        from ufmlib.config import UFMConfig
        from ufmlib.train import train

        train(UFMConfig(K=2, n=2, d=2, L=2, seed=seed), lr=1.0e6, epochs=100, progress=False, check_every=1)
    elif mode == "out-of-memory":
        import numpy as np

        np.ones(2**50)  # 8 PiB
    elif mode == "interrupt":
        import os
        import signal
        import time

        os.kill(os.getpid(), signal.SIGINT)  # what Jupyter's "interrupt kernel" sends
        time.sleep(30)
    glue("mode", mode)
    ```
    """
)

FAILURES = {"unstable_diverge": "diverge", "unstable_oom": "out-of-memory", "unstable_interrupt": "interrupt"}
ERRORS = {"unstable_diverge": "TrainingDivergedError", "unstable_oom": "MemoryError", "unstable_interrupt": "KeyboardInterrupt"}


def glued(nb: dict) -> dict[str, dict[str, str]]:
    """Every glued value of an executed notebook: ``{name: {mime type: payload}}``."""
    out = {}
    for cell in nb["cells"]:
        for output in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            meta = output.get("metadata", {}).get("scrapbook", {})
            if "name" in meta:
                prefix = meta.get("mime_prefix", "")
                out[meta["name"]] = {k[len(prefix):]: v for k, v in output.get("data", {}).items() if k.startswith(prefix)}
    return out


def glued_numbers(values: dict[str, dict[str, str]]) -> dict[str, float]:
    numbers = {}
    for name, bundle in values.items():
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(bundle.get("text/plain", ""))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                numbers[name] = value
    return numbers


def cell_outputs(nb: dict) -> list:
    """The outputs of every code cell, without timing metadata."""
    return [cell.get("outputs", []) for cell in nb["cells"] if cell["cell_type"] == "code"]


def profile(modes: dict[str, str]) -> dict:
    smoke = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    return {
        "name": "determinism",
        "defaults": {"device": "cpu", "seed": 0},
        "notebooks": {"optimum": smoke["notebooks"]["optimum"], **{name: {"mode": m} for name, m in modes.items()}},
    }


def make_root(base: Path, extra: dict[str, str]) -> Path:
    root = base / "repo"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "optimum.md", root / "notebooks" / "optimum.md")
    for name, text in extra.items():
        (root / "notebooks" / f"{name}.md").write_text(text)
    (root / "ufmlib").symlink_to(ROOT / "ufmlib", target_is_directory=True)
    return root


def run(prof, *, root, out, stream=None, **kw):
    stream = stream or io.StringIO()
    report = regenerate(prof, root=root, out_dir=out, build_book=False, progress=False, stream=stream, **kw)
    return report, stream.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run 1: optimum + three failing notebooks; run 2: optimum again (elsewhere); run 3: the
    same profile with the failures fixed, without ``force``, into run 1's outputs."""
    base = tmp_path_factory.mktemp("determinism")
    root = make_root(base, {name: UNSTABLE for name in FAILURES})
    first, second = base / "first", base / "second"
    r1, printed1 = run(profile(FAILURES), root=root, out=first, force=True)
    optimum_after_1 = (first / "notebooks" / "optimum.ipynb").read_bytes()
    r2, _ = run(profile(FAILURES), root=root, out=second, force=True, only="optimum")
    status_after_1 = json.loads((first / "status.json").read_text())
    r3, printed3 = run(profile({name: "ok" for name in FAILURES}), root=root, out=first)
    return {
        "root": root, "first": first, "second": second, "reports": (r1, r2, r3), "printed": (printed1, printed3),
        "optimum_after_1": optimum_after_1, "status_after_1": status_after_1,
    }


# ----------------------------------------------------------------------------------------
# determinism


@pytest.mark.slow
def test_two_runs_give_identical_glued_numbers_outputs_and_figures(runs):
    r1, r2, _ = runs["reports"]
    assert dict((o.name, o.status) for o in r1.outcomes)["optimum"] == "ok", r1.failed
    assert [(o.name, o.status) for o in r2.outcomes] == [("optimum", "ok")]
    a = json.loads((runs["first"] / "notebooks" / "optimum.ipynb").read_text())
    b = json.loads((runs["second"] / "notebooks" / "optimum.ipynb").read_text())

    glue_a, glue_b = glued(a), glued(b)
    numbers_a, numbers_b = glued_numbers(glue_a), glued_numbers(glue_b)
    assert len(numbers_a) >= 20 and {"gamma", "loss_opt", "descent_loss", "grad_max"} <= set(numbers_a)
    assert numbers_a == numbers_b  # exact float64 equality, number by number
    assert {k: v["text/plain"] for k, v in glue_a.items()} == {k: v["text/plain"] for k, v in glue_b.items()}
    figures = [k for k, v in glue_a.items() if "image/png" in v]
    assert figures == ["fig-optimum-descent", "fig-optimum-phase"]
    for name in figures:  # the PNG bytes of the glued figures
        assert base64.b64decode(glue_a[name]["image/png"]) == base64.b64decode(glue_b[name]["image/png"]), name

    checks_a, checks_b = a["metadata"]["ufm"]["checks"], b["metadata"]["ufm"]["checks"]
    assert len(checks_a) >= 10 and checks_a == checks_b
    assert cell_outputs(a) == cell_outputs(b)  # every number shown on the page

    prov_a, prov_b = a["metadata"]["ufm"]["provenance"], b["metadata"]["ufm"]["provenance"]
    volatile = {"date", "wall_time_s"}
    assert {k: v for k, v in prov_a.items() if k not in volatile} == {k: v for k, v in prov_b.items() if k not in volatile}

    files_a = sorted(p.relative_to(runs["first"] / "figures") for p in (runs["first"] / "figures").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(runs["second"] / "figures") for p in (runs["second"] / "figures").rglob("*") if p.is_file())
    assert files_a and files_a == files_b
    for rel in files_a:
        assert (runs["first"] / "figures" / rel).read_bytes() == (runs["second"] / "figures" / rel).read_bytes(), rel


def _train_twice(dtype: str):
    cfg = UFMConfig(K=3, n=4, d=6, L=3, dtype=dtype, seed=7)
    first = train(cfg, lr=0.3, epochs=300, progress=False)
    second = train(cfg, lr=0.3, epochs=300, progress=False)
    return first, second


def test_float64_training_is_repeatable_exactly():
    runtime.configure(threads=1, environment=False)
    a, b = _train_twice("float64")
    assert list(a.losses) == list(b.losses)
    assert all(torch.equal(x, y) for x, y in zip(a.params.tensors(), b.params.tensors()))


def test_float32_training_is_repeatable_to_the_stated_tolerance():
    runtime.configure(threads=1, environment=False)
    a, b = _train_twice("float32")
    assert a.params.tensors()[0].dtype == torch.float32
    for x, y in zip(a.params.tensors(), b.params.tensors()):
        torch.testing.assert_close(x, y, rtol=FLOAT32_RTOL, atol=0.0)
    torch.testing.assert_close(torch.as_tensor(a.losses), torch.as_tensor(b.losses), rtol=FLOAT32_RTOL, atol=0.0)


# ----------------------------------------------------------------------------------------
# failures and resuming


@pytest.mark.slow
def test_failing_notebooks_are_reported_and_leave_the_other_output_intact(runs):
    r1 = runs["reports"][0]
    printed = runs["printed"][0]
    statuses = {o.name: o.status for o in r1.outcomes}
    assert statuses == {"optimum": "ok", **{name: "failed" for name in FAILURES}}
    assert r1.exit_code == 1
    for name, error in ERRORS.items():
        outcome = next(o for o in r1.outcomes if o.name == name)
        assert error in outcome.error, outcome.error
        assert re.search(rf"^{name}\s+failed\s+\d+\.\d$", printed, flags=re.M), printed  # the final table
        assert f"FAILED {name} (no earlier good run: its page shows the error)" in printed
        latest = runs["status_after_1"][name]["latest_run"]
        assert latest["status"] == "failed" and error in latest["details"] and "\n" not in latest["error"]
    assert runs["status_after_1"]["optimum"]["latest_run"]["status"] == "ok"
    executed = json.loads(runs["optimum_after_1"])
    assert executed["metadata"]["ufm"]["provenance"]["profile"] == "determinism"
    assert all(c["passed"] for c in executed["metadata"]["ufm"]["checks"])
    assert not list(runs["first"].rglob("*.partial"))


@pytest.mark.slow
def test_a_second_run_without_force_reruns_only_what_is_missing(runs):
    r3 = runs["reports"][2]
    assert [(o.name, o.status) for o in r3.outcomes] == [
        ("optimum", "up to date"), *[(name, "ok") for name in sorted(FAILURES)]]
    assert r3.exit_code == 0
    assert (runs["first"] / "notebooks" / "optimum.ipynb").read_bytes() == runs["optimum_after_1"]
    for name in FAILURES:
        nb = json.loads((runs["first"] / "notebooks" / f"{name}.ipynb").read_text())
        assert glued(nb)["mode"]["text/plain"] == "ok"
    state = json.loads((runs["first"] / "status.json").read_text())
    assert {name: state[name]["latest_run"]["status"] for name in FAILURES} == {name: "ok" for name in FAILURES}
    assert re.search(r"^optimum\s+up to date\s+0\.0$", runs["printed"][1], flags=re.M)


def _fake_papermill(monkeypatch, interrupt: set[str]):
    """Replace papermill's executor: write the notebook as it is, or raise KeyboardInterrupt
    (Ctrl-C in the terminal reaches the parent process; the kernel runs in its own session)."""
    import nbformat
    import papermill

    executed = []

    def execute_notebook(nb, output_path, **kwargs):
        name = Path(output_path).stem
        executed.append(name)
        if name in interrupt:
            raise KeyboardInterrupt
        nbformat.write(nb, output_path)

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return executed


def _ctrl_c_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    for name in ("alpha", "beta", "gamma"):
        (root / "notebooks" / f"{name}.md").write_text(UNSTABLE)
    return root


def test_ctrl_c_during_a_run_keeps_finished_outputs_and_the_next_run_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "library_hash", lambda root: "fixed")
    root, out = _ctrl_c_root(tmp_path), tmp_path / "out"
    prof = {"name": "p", "defaults": {"device": "cpu"}}
    executed = _fake_papermill(monkeypatch, interrupt={"beta"})
    with pytest.raises(KeyboardInterrupt):
        regenerate(prof, root=root, out_dir=out, build_book=False, progress=False, stream=io.StringIO())
    assert executed == ["alpha", "beta"]
    assert (out / "notebooks" / "alpha.ipynb").is_file()
    assert json.loads((out / "notebooks" / "alpha.ipynb").read_text())["metadata"]["ufm"]["notebook"] == "alpha"
    assert not (out / "notebooks" / "beta.ipynb").exists() and not list(out.rglob("*.partial"))

    executed = _fake_papermill(monkeypatch, interrupt=set())
    report = regenerate(prof, root=root, out_dir=out, build_book=False, progress=False, stream=io.StringIO())
    assert [(o.name, o.status) for o in report.outcomes] == [("alpha", "up to date"), ("beta", "ok"), ("gamma", "ok")]
    assert executed == ["beta", "gamma"]


def test_ctrl_c_during_a_run_is_reported_in_the_final_table(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "library_hash", lambda root: "fixed")
    root, out = _ctrl_c_root(tmp_path), tmp_path / "out"
    _fake_papermill(monkeypatch, interrupt={"beta"})
    stream = io.StringIO()
    with contextlib.suppress(KeyboardInterrupt):
        regenerate({"name": "p", "defaults": {"device": "cpu"}}, root=root, out_dir=out, build_book=False,
                      progress=False, stream=stream)
    printed = stream.getvalue()
    assert re.search(r"^alpha\s+ok\b", printed, flags=re.M), printed
    assert re.search(r"^beta\s+(interrupted|failed)\b", printed, flags=re.M), printed
    state = json.loads((out / "status.json").read_text())
    assert state["beta"]["latest_run"]["status"] in ("interrupted", "failed")


# ----------------------------------------------------------------------------------------
# ufmlib.runtime


def test_configure_fixes_threads_environment_and_seeds(monkeypatch):
    for name in runtime.THREAD_VARIABLES:
        monkeypatch.setenv(name, "7")  # restored after the test
    settings = runtime.configure(threads=1, seed=5)
    assert settings.threads == 1 and settings.torch_threads == 1 and torch.get_num_threads() == 1
    assert settings.seed == 5
    assert {name: os.environ[name] for name in runtime.THREAD_VARIABLES} == {name: "1" for name in runtime.THREAD_VARIABLES}
    first = torch.rand(3)
    runtime.configure(threads=1, seed=5)
    assert torch.equal(first, torch.rand(3))
    assert runtime.thread_environment(2) == {name: "2" for name in runtime.THREAD_VARIABLES}


def test_configure_without_environment_leaves_it_alone(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.configure(threads=1, environment=False).seed is None
    assert os.environ["OMP_NUM_THREADS"] == "3"


@pytest.mark.parametrize(
    "kwargs, name",
    [({"threads": 0}, "threads"), ({"threads": 1.5}, "threads"), ({"threads": True}, "threads"),
     ({"seed": -1}, "seed"), ({"seed": "0"}, "seed"), ({"environment": "yes"}, "environment")],
)
def test_configure_rejects_bad_arguments_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        runtime.configure(**kwargs)
    assert torch.get_num_threads() == 1
