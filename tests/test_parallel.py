"""Many notebooks at once: ``--jobs N`` and a Dask cluster give the serial run's numbers; Ctrl-C
stops every kernel and a second run resumes; a worker killed mid-notebook leaves that notebook
retried once, then failed, while the others finish and earlier outputs stay intact.

The Dask scheduler and workers are started by the tests on 127.0.0.1 and stopped by them
(``clustertools.dask_cluster``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from booktools import smoke_book
from clustertools import dask_cluster, glued_and_checks, tiny_repo
from ufmlib.book.executors import check_parallelism
from ufmlib.book.profiles import list_notebooks
from ufmlib.book.regenerate import regenerate


def _same_as_serial(serial_root: Path, other: Path, names: list[str]) -> set[str]:
    """Assert every notebook of ``other`` glued the serial run's values and made its checks,
    and wrote the same figures; return the workers that ran them."""
    workers = set()
    for name in names:
        expected = glued_and_checks(serial_root / "book" / "chapters" / f"{name}.ipynb")
        got = glued_and_checks(other / "notebooks" / f"{name}.ipynb")
        assert got[0] == expected[0], f"{name}: glued values differ"
        assert got[1] == expected[1], f"{name}: checks differ"
        meta = json.loads((other / "notebooks" / f"{name}.ipynb").read_text())["metadata"]["ufm"]
        workers.add(meta["provenance"]["worker"])
    serial_figures = serial_root / "outputs" / "figures"
    figures = sorted(p.name for p in (other / "figures").iterdir())
    assert figures  # each is compared with the serial run's file of the same name below
    for figure in figures:
        assert (other / "figures" / figure).read_bytes() == (serial_figures / figure).read_bytes(), figure
    return workers


@pytest.mark.slow
def test_jobs_and_a_dask_cluster_give_the_serial_runs_values(tmp_path_factory, tmp_path):
    book = smoke_book(tmp_path_factory)  # the serial run (shared with test_book.py)
    names = list_notebooks(book.root)
    # --jobs 2 on three notebooks (each runs in a child process, as on a Dask worker below)
    few = ["optimum", "gradient", "weights"]
    parallel = regenerate("smoke", root=book.root, only=few, out_dir=tmp_path / "jobs", build_book=False, force=True,
                          progress=False, jobs=2)
    assert [(o.name, o.status) for o in parallel.outcomes] == [(n, "ok") for n in few], [o.error for o in parallel.failed]
    assert _same_as_serial(book.root, tmp_path / "jobs", few) == {"local"}
    with dask_cluster(tmp_path / "cluster", workers=2) as (address, _):
        remote = regenerate("smoke", root=book.root, out_dir=tmp_path / "dask", build_book=False, force=True,
                            progress=False, scheduler=address)
        assert [(o.name, o.status) for o in remote.outcomes] == [(n, "ok") for n in names], [o.error for o in remote.failed]
        workers = _same_as_serial(book.root, tmp_path / "dask", names)
    assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers), workers
    assert sorted(p.name for p in (tmp_path / "dask" / "figures").iterdir()) == sorted(
        p.name for p in (book.root / "outputs" / "figures").iterdir())  # every figure came back from the workers
    # the content cache works as in a local run: nothing is run again
    again = regenerate("smoke", root=book.root, out_dir=tmp_path / "dask", build_book=False, progress=False, jobs=2)
    assert {o.status for o in again.outcomes} == {"up to date"}


def _status(root: Path) -> dict:
    return json.loads((root / "outputs" / "status.json").read_text())


@pytest.mark.slow
def test_ctrl_c_stops_every_kernel_keeps_finished_outputs_and_a_second_run_resumes(tmp_path):
    flag = tmp_path / "open-gate"
    root = tiny_repo(tmp_path, flag=flag)
    chapters = root / "book" / "chapters"
    proc = subprocess.Popen([sys.executable, "-m", "ufmlib.book", "--root", str(root), "--profile", "p", "--no-book",
                             "--jobs", "2", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not ((chapters / "quick1.ipynb").is_file() and (chapters / "quick2.ipynb").is_file()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (chapters / "quick2.ipynb").is_file(), "the quick notebooks did not finish while the gate waited"
    time.sleep(1.0)  # the quick notebooks' processes end
    started = psutil.Process(proc.pid).children(recursive=True)
    assert any("ipykernel" in " ".join(p.cmdline()) for p in started), ("the gate's kernel is not running", proc.poll(), started)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output.decode()
    _, alive = psutil.wait_procs(started, timeout=15)
    assert not alive, f"still running after Ctrl-C: {[p.cmdline() for p in alive]}"
    assert not (chapters / "gate.ipynb").exists()
    state = _status(root)
    assert state["gate"]["latest_run"]["status"] == "interrupted"
    assert state["quick1"]["latest_run"]["status"] == "ok"
    flag.write_text("open")
    resumed = regenerate("p", root=root, build_book=False, progress=False, jobs=2)
    assert [(o.name, o.status) for o in resumed.outcomes] == [("quick1", "up to date"), ("gate", "ok"), ("quick2", "up to date")]


def _wait_until_running(client, name: str, *, not_on: set[str], timeout_s: float = 90) -> str:
    """The address of the worker that runs ``name``'s task (and is not in ``not_on``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for worker, keys in client.processing().items():
            if worker not in not_on and any(str(k).startswith(f"ufm-{name}-") for k in keys):
                return worker
        time.sleep(0.05)
    raise AssertionError(f"{name} never ran on a worker outside {not_on}")


def _kill(client, worker: str) -> None:
    os.kill(client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_worker_retries_the_notebook_once_then_fails_it_while_the_others_finish(tmp_path):
    from distributed import Client

    flag = tmp_path / "open-gate"
    flag.write_text("open")
    root = tiny_repo(tmp_path, flag=flag)
    first = regenerate("p", root=root, build_book=False, progress=False)  # earlier good outputs
    assert first.exit_code == 0
    gate_page = (root / "book" / "chapters" / "gate.ipynb").read_bytes()
    with dask_cluster(tmp_path / "cluster", workers=4, allowed_failures=0) as (address, _), \
            Client(address, timeout="30s") as client:
        runs = {}

        def run(key):
            runs[key] = regenerate("p", root=root, build_book=False, progress=False, force=True, scheduler=address)

        # killed once: the client submits it again, and it finishes on another worker
        flag.unlink()
        thread = threading.Thread(target=run, args=("once",))
        thread.start()
        first_worker = _wait_until_running(client, "gate", not_on=set())
        _kill(client, first_worker)
        second_worker = _wait_until_running(client, "gate", not_on={first_worker})
        flag.write_text("open")
        thread.join(timeout=180)
        assert [(o.name, o.status) for o in runs["once"].outcomes] == [("quick1", "ok"), ("gate", "ok"), ("quick2", "ok")]
        gate = json.loads((root / "book" / "chapters" / "gate.ipynb").read_text())["metadata"]["ufm"]
        assert gate["provenance"]["worker"].startswith(second_worker)
        gate_page = (root / "book" / "chapters" / "gate.ipynb").read_bytes()
        # killed twice: reported failed, the others finish, the earlier output stays
        flag.unlink()
        thread = threading.Thread(target=run, args=("twice",))
        thread.start()
        dead = {first_worker}
        for _ in range(2):
            worker = _wait_until_running(client, "gate", not_on=dead)
            _kill(client, worker)
            dead.add(worker)
        thread.join(timeout=180)
    report = runs["twice"]
    assert [(o.name, o.status) for o in report.outcomes] == [("quick1", "ok"), ("gate", "failed"), ("quick2", "ok")]
    assert "KilledWorker" in report.outcomes[1].error
    assert (root / "book" / "chapters" / "gate.ipynb").read_bytes() == gate_page
    assert _status(root)["gate"]["latest_run"]["status"] == "failed"


def test_bad_parallel_options_are_refused_naming_the_option():
    for jobs, scheduler, word in ((0, None, "jobs"), (True, None, "jobs"), (2, "tcp://127.0.0.1:1", "exclude"),
                                  (1, "127.0.0.1:8786", "scheduler")):
        with pytest.raises(ValueError, match=word):
            check_parallelism(jobs, scheduler)


def test_an_unreachable_scheduler_is_an_error_before_anything_runs():
    from ufmlib.book.cluster import DaskPool

    with pytest.raises(OSError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DaskPool("tcp://127.0.0.1:9", timeout_s=2)


def test_the_command_line_refuses_jobs_with_a_scheduler(capsys):
    from ufmlib.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["regenerate", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:8786"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["regenerate", "--jobs", "0"])
    assert exc.value.code == 2 and "positive integer" in capsys.readouterr().err
