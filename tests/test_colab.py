"""The Colab install cell: every notebook installs the pinned release from the one address, and
a paired notebook runs the way Colab runs it.

The address is ``[project.urls] Repository`` of ``pyproject.toml``, the revision the release tag
``v<version>`` (:mod:`ufmlib.book.colab`). :func:`test_paired_notebook_runs_as_on_colab` runs the
committed ``notebooks/optimum.ipynb`` in a fresh virtual environment without ufmlib, with a
fake ``google.colab`` imported at kernel start-up (as Colab's kernel does); its install cell,
pointed at a local clone of the repository's committed state at the pinned tag (made at HEAD
when the repository has no such tag yet), installs ufmlib with pip (offline: no index, no build
isolation; the dependencies are this environment's, seen through a ``.pth`` path), and then
every cell runs with the smoke profile's parameters.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from ufmlib.book import colab, execute, profiles

ROOT = Path(__file__).resolve().parents[1]
COLAB_NOTEBOOK = "optimum"
"""The notebook run as on Colab (the cheapest one under the smoke profile)."""


# ----------------------------------------------------------------------------------------
# one address, one pinned revision


def test_every_notebook_installs_the_pinned_release_from_pyprojects_repository():
    assert colab.install_cell_problems(ROOT) == []


def test_books_repository_url_is_pyprojects():
    assert colab.config_problems(ROOT) == []


def test_pin_is_the_release_tag_of_the_version():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert colab.repository_url(ROOT) == project["urls"]["Repository"]
    assert colab.pinned_revision(ROOT) == f"v{project['version']}"
    assert colab.install_line(ROOT) == (
        f'%pip install --quiet "ufmlib @ git+{project["urls"]["Repository"]}@v{project["version"]}"'
    )
    assert colab.install_cell(ROOT).splitlines()[-1] == "    " + colab.install_line(ROOT)


def _fake_root(tmp_path: Path, cell: str, *, tags: str = "[hide-cell]") -> Path:
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "_config.yml").write_text("repository:\n  url: https://github.com/elsewhere/else\n")
    (root / "notebooks" / "a.md").write_text(
        "---\nkernelspec:\n  name: python3\n  display_name: Python 3\n  language: python\n---\n\n# A\n\n"
        f"```{{code-cell}} ipython3\n:tags: {tags}\n\n{cell}\n```\n"
    )
    return root


@pytest.mark.parametrize(
    ("cell", "tags", "fragment"),
    [
        (lambda: colab.install_cell(ROOT), "[hide-cell]", None),
        (lambda: colab.install_cell(ROOT).replace(colab.pinned_revision(ROOT), "main"), "[hide-cell]", "@main, not"),
        (lambda: colab.install_cell(ROOT).replace("ufm-companion/ufm-companion", "o/r"), "[hide-cell]", "github.com/o/r@"),
        (lambda: colab.install_cell(ROOT), "[remove-input]", "not tagged 'hide-cell'"),
        (lambda: "import sys\n" + colab.install_line(ROOT), "[hide-cell]", "only on Colab"),
        (lambda: colab.install_cell(ROOT).replace(colab.GUARD, "if True:"), "[hide-cell]", "only on Colab"),
        (lambda: colab.install_cell(ROOT).replace("--quiet ", ""), "[hide-cell]", "the install line is"),
        (lambda: "import ufmlib", "[hide-cell]", "does not install ufmlib"),
    ],
)
def test_install_cell_problems_name_the_notebook_and_what_is_wrong(tmp_path, cell, tags, fragment):
    root = _fake_root(tmp_path, cell(), tags=tags)
    problems = colab.install_cell_problems(root)
    if fragment is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith("notebooks/a.md: ") and fragment in problems[0], problems


def test_config_problems_name_both_addresses(tmp_path):
    root = _fake_root(tmp_path, colab.install_cell(ROOT))
    (problem,) = colab.config_problems(root)
    assert "elsewhere/else" in problem and colab.repository_url(ROOT) in problem


# ----------------------------------------------------------------------------------------
# a paired notebook, run as on Colab

PROBE_BEFORE = textwrap.dedent(
    """\
    import importlib.util, json, sys
    print("UFM-PROBE " + json.dumps({"where": "before", "ufmlib": importlib.util.find_spec("ufmlib") is not None,
          "colab": "google.colab" in sys.modules, "prefix": sys.prefix}))"""
)
PROBE_AFTER = textwrap.dedent(
    """\
    import importlib.metadata, json, sys, ufmlib
    _dist = importlib.metadata.distribution("ufmlib")
    print("UFM-PROBE " + json.dumps({"where": "after", "file": ufmlib.__file__, "prefix": sys.prefix,
          "direct_url": json.loads(_dist.read_text("direct_url.json") or "{}")}))"""
)


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _pinned_clone(source: Path, dest: Path) -> tuple[Path, str]:
    """A clone of the committed state of ``source`` with the tag ``v<version>`` (made at HEAD
    if the repository has none yet); returns the clone and the tag's commit."""
    subprocess.run(["git", "clone", "--quiet", "--no-local", str(source), str(dest)], check=True, capture_output=True)
    tag = colab.pinned_revision(dest)
    if not _git("tag", "--list", tag, cwd=dest):
        _git("-c", "tag.gpgSign=false", "tag", tag, cwd=dest)  # lightweight, as a release would be
    return dest, _git("rev-list", "-n", "1", tag, cwd=dest)


def _colab_venv(path: Path) -> Path:
    """A virtual environment without ufmlib that sees this environment's packages (torch,
    ipykernel, pip, ...) through a ``.pth`` line naming their folder: the folder is put on
    ``sys.path`` as it is, so its own ``.pth`` files - among them the editable install of
    ufmlib - are not processed. Returns its Python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    host = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(purelib, "ufm-host-packages.pth").write_text("".join(f"{p}\n" for p in host))
    return python


def _kernel_spec(folder: Path, python: Path, fake: Path) -> str:
    """A kernelspec running ``python``, which imports ``google.colab`` (from ``fake``) at start-up."""
    name = "ufm-colab"
    spec = folder / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.exec_lines=import google.colab"],
        "display_name": "fake Colab", "language": "python", "metadata": {"supported_encryption": ["curve"]},
        "env": {"PYTHONPATH": str(fake)},
    }))
    return name


def _fake_google_colab(folder: Path) -> Path:
    """A ``google.colab`` package (``google`` as a namespace package, like the real one)."""
    pkg = folder / "google" / "colab"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A stand-in for Colab\'s google.colab in the tests."""\n')
    return folder


def _probes(nb) -> dict[str, dict]:
    found = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            for line in out.get("text", "").splitlines():
                if line.startswith("UFM-PROBE "):
                    probe = json.loads(line[len("UFM-PROBE "):])
                    found[probe["where"]] = probe
    return found


def run_as_on_colab(source: Path, tmp_path: Path, notebook: str = COLAB_NOTEBOOK):
    """Run ``notebooks/<notebook>.ipynb`` of the committed state of ``source`` as Colab does;
    returns the executed notebook, the clone and the pinned tag's commit."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    clone, commit = _pinned_clone(source, tmp_path / "clone")
    python = _colab_venv(tmp_path / "venv")
    kernels = tmp_path / "jupyter"
    name = _kernel_spec(kernels, python, _fake_google_colab(tmp_path / "fake"))

    nb = load_notebook_node(str(clone / "notebooks" / f"{notebook}.ipynb"))  # papermill's reader
    first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    install = nb.cells[first]
    assert colab.install_line(clone) in install.source, "the committed install cell is not the pinned one"
    # the only change: the pinned address -> the local clone at the same tag, built offline
    install.source = install.source.replace(
        f"git+{colab.repository_url(clone)}@", f"git+file://localhost{clone}@"  # pip 23's parser needs a host
    ).replace("%pip install --quiet", "%pip install --quiet --no-build-isolation")
    smoke = profiles.load_profile("smoke", root=clone)
    (job,) = profiles.plan(smoke, root=clone, only=notebook)
    nb = parameterize_notebook(nb, dict(job.parameters))  # the smoke profile's values, as papermill injects them
    nb.cells.insert(first, nbformat.v4.new_code_cell(PROBE_BEFORE))
    nb.cells.append(nbformat.v4.new_code_cell(PROBE_AFTER))

    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MPLBACKEND", "UFM_BOOK_BUILD", "UFM_FIGURE_DIR")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PATH=os.pathsep.join([str(python.parent), env.get("PATH", "")]))
    work = tmp_path / "content"  # Colab's working directory: no ufmlib in it
    work.mkdir()
    km = KernelManager(kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels / "kernels")]),
                       config=execute._client_config())
    client = NotebookClient(nb, km=km, timeout=300, startup_timeout=120, resources={"metadata": {"path": str(work)}})
    try:
        client.execute(env=env, cleanup_kc=True)  # shut the kernel down afterwards
    except CellExecutionError as exc:
        shown = "\n".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
                          for c in nb.cells[first:first + 2] for o in c.get("outputs", []))
        raise AssertionError(f"{notebook}.ipynb failed as on Colab; probe and install cell printed:\n{shown}") from exc
    return nb, clone, commit, python


@pytest.mark.slow
def test_paired_notebook_runs_as_on_colab(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the install cell installs from a git repository")
    nb, clone, commit, python = run_as_on_colab(ROOT, tmp_path)

    probes = _probes(nb)
    venv = str(python.parent.parent)
    assert probes["before"] == {"where": "before", "ufmlib": False, "colab": True, "prefix": venv}
    after = probes["after"]
    assert after["prefix"] == venv and Path(after["file"]).is_relative_to(venv), after
    assert after["direct_url"]["url"] == f"file://localhost{clone}"
    assert after["direct_url"]["vcs_info"]["requested_revision"] == colab.pinned_revision(clone)
    assert after["direct_url"]["vcs_info"]["commit_id"] == commit

    # outside the book build, glue also shows its values as "name = value"
    glued = [o.metadata["scrapbook"]["name"] for c in nb.cells for o in c.get("outputs", [])
             if o.get("output_type") == "display_data" and "scrapbook" in o.get("metadata", {})]
    shown = {o.data["text/plain"].split(" = ", 1)[0] for c in nb.cells for o in c.get("outputs", [])
             if o.get("output_type") == "display_data" and " = " in o.get("data", {}).get("text/plain", "")}
    assert glued and set(glued) & shown, (glued, shown)
