"""A notebook run prints nothing of its own to the terminal, but real errors still do.

ipykernel 7.4 logs "Kernel is running over TCP without encryption..." (``IPKernelApp.
init_sockets``) to its stderr, the terminal of ``make book``, once per notebook, unless the
kernel manager provisions CurveZMQ keys. ``ufmlib.book.execute`` asks for that through the
documented ``KernelManager.transport_encryption`` setting (``execute._client_config``). These
tests run a tiny notebook through :func:`ufmlib.book.execute.execute_job` and read what reached
file descriptors 1 and 2 (``capfd``: the kernel inherits them).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ufmlib.book import execute
from ufmlib.book.profiles import Job

from booktools import FRONT

WARNING = "without encryption"

TINY = FRONT + textwrap.dedent(
    """\

    # Tiny

    ```{code-cell} ipython3
    :tags: [parameters]

    seed: int = 0  # seed
    device: str = "cpu"  # device
    ```

    ```{code-cell} ipython3
    import os

    print(seed + 1)
    os.write(2, b"ufm-real-stderr: the kernel's own stderr still reaches the terminal\\n")
    ```
    """
)


def run_tiny(tmp_path: Path) -> execute.Outcome:
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    source = root / "notebooks" / "tiny.md"
    source.write_text(TINY)
    job = Job("tiny", source, root / "outputs" / "notebooks" / "tiny.ipynb", {"seed": 3}, {}, "cpu", "x")
    return execute.execute_job(job, root=root, out_dir=root / "outputs", profile="t")


def test_run_is_encrypted_and_prints_no_transport_warning(tmp_path, capfd):
    import nbformat

    outcome = run_tiny(tmp_path)
    printed = capfd.readouterr()
    assert outcome.status == "ok", outcome.error
    assert WARNING not in printed.err and WARNING not in printed.out
    assert "ufm-real-stderr" in printed.err  # stderr is not hidden
    nb = nbformat.read(str(tmp_path / "repo" / "outputs" / "notebooks" / "tiny.ipynb"), as_version=4)
    assert "4" in "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_without_encryption_the_kernel_warns(tmp_path, capfd, monkeypatch):
    """The control: the same run with ``transport_encryption = "disabled"`` shows the warning
    (so the test above would see it)."""
    from traitlets.config import Config

    monkeypatch.setattr(execute, "_client_config", lambda: Config({"KernelManager": {"transport_encryption": "disabled"}}))
    outcome = run_tiny(tmp_path)
    printed = capfd.readouterr()
    assert outcome.status == "ok", outcome.error
    if WARNING not in printed.err:
        pytest.skip("this ipykernel does not warn about unencrypted TCP")
    assert "ufm-real-stderr" in printed.err


def test_client_config_asks_for_curve_only_when_libzmq_has_it(monkeypatch):
    import zmq

    monkeypatch.setattr(zmq, "has", lambda feature: False)
    assert execute._client_config().KernelManager.transport_encryption == "disabled"
    monkeypatch.setattr(zmq, "has", lambda feature: feature == "curve")
    assert execute._client_config().KernelManager.transport_encryption == "auto"
