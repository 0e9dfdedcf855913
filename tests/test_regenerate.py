"""Notebook infrastructure: profiles, the parameters cell, the regeneration run, provenance.

Covers ``ufmlib.book`` (validation before any kernel starts, a failing notebook keeps its
previous output and makes the run exit non-zero, paired notebooks in sync, every notebook has a
parameters cell with ``seed`` and ``device``, the provenance box), the book's Sphinx extension
``book/_ext/ufm_pages.py`` (the launch-button rewrite), ``ufmlib.notebook`` (checks with
explicit tolerances, glued values) and ``ufmlib.plotting.save_figure`` (deterministic files).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from ufmlib import notebook
from ufmlib.book import build, cli, parameters, profiles, provenance
from ufmlib.book.parameters import ProfileError
from ufmlib.book.regenerate import regenerate

from booktools import SEED_AND_DEVICE, notebook_text

ROOT = Path(__file__).resolve().parents[1]


def load_extension():
    """The book's Sphinx extension ``book/_ext/ufm_pages.py``, imported from its file."""
    spec = importlib.util.spec_from_file_location("ufm_pages", ROOT / "book" / "_ext" / "ufm_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



GOOD = notebook_text(
    "Good",
    """
    x: int = 2  # a number
    scale: float = 1.5  # a factor
    seed: int = 0  # seed
    device: str = "cpu"  # device
    """,
    """
    from ufmlib.notebook import check
    check("double", 2 * x, x + x, atol=0.0, result="R0", kind="identity", description="2x = x + x")
    """,
)

BAD = notebook_text(
    "Bad",
    """
    x: int = 2  # a number
    seed: int = 0  # seed
    device: str = "cpu"  # device
    """,
    """
    assert x < 0, "x must be negative for this notebook to pass"
    """,
)


def make_root(tmp_path: Path, notebooks: dict[str, str], profiles: dict[str, str]) -> Path:
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "profiles").mkdir()
    for name, text in notebooks.items():
        (root / "notebooks" / f"{name}.md").write_text(text)
    for name, text in profiles.items():
        (root / "profiles" / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


# ----------------------------------------------------------------------------------------
# the parameters cell


def test_parse_parameters_reads_types_defaults_and_help():
    params = parameters.parse_parameters(
        'K: int = 3  # number of classes\nlam: float = 0.01  # weight decay\n'
        'depths: list[int] = [1, 2]  # depths\nmode: Literal["a", "b"] = "a"  # mode\n'
        'extra: int | None = None  # optional\n'
    )
    assert list(params) == ["K", "lam", "depths", "mode", "extra"]
    assert params["K"].default == 3 and params["K"].annotation == "int" and params["K"].help == "number of classes"
    assert params["lam"].coerce(1) == 1.0 and isinstance(params["lam"].coerce(1), float)
    assert params["depths"].coerce((3, 4)) == [3, 4]
    assert params["mode"].coerce("b") == "b"
    assert params["extra"].coerce(None) is None and params["extra"].coerce(4) == 4
    for name, bad in [("K", 3.0), ("K", True), ("lam", "0.1"), ("depths", [1, 2.5]), ("mode", "c"), ("extra", "x")]:
        with pytest.raises(TypeError):
            params[name].coerce(bad)
    assert params["mode"].allowed() == "one of 'a', 'b'"


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("K = 3  # no annotation\n", "no type annotation"),
        ("K: int = 3.5  # wrong default\n", "does not fit"),
        ("K: dict = {}  # unsupported\n", "unsupported annotation"),
        ("K: int = 3  # K == 3 here\n", "more than one '='"),
        ("import math\n", "annotated assignments"),
        ("K: int = 1 +\n", "not valid Python"),
    ],
)
def test_parse_parameters_rejects_bad_cells_naming_the_notebook(source, fragment):
    with pytest.raises(ProfileError, match=fragment) as err:
        parameters.parse_parameters(source, notebook="demo")
    assert "'demo'" in str(err.value)


def test_every_notebook_has_parameters_with_seed_and_device_and_a_colab_install_cell():
    names = profiles.list_notebooks(ROOT)
    assert "optimum" in names
    for name in names:
        path = ROOT / "notebooks" / f"{name}.md"
        params = parameters.notebook_parameters(path)
        assert params["seed"].annotation == "int" and isinstance(params["seed"].default, int), name
        assert params["device"].annotation == "str" and params["device"].default == "cpu", name
        assert all(p.help for p in params.values()), f"{name}: every parameter needs a help comment"
        nb = parameters.read_notebook(path)
        assert nb.metadata["kernelspec"]["name"] == "python3", name
        assert nb.metadata["jupytext"]["formats"] == "ipynb,md:myst", name
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert {"hide-cell", "remove-cell"} & set(first.metadata.get("tags", [])), name
        assert '"google.colab" in sys.modules' in first.source and "%pip install" in first.source, name


def test_every_notebook_is_in_the_toc_and_in_every_profile():
    toc = (ROOT / "_toc.yml").read_text()
    for name in profiles.list_notebooks(ROOT):
        assert f"book/chapters/{name}" in toc, name
        for profile in ("smoke", "ci", "paper"):
            assert name in profiles.load_profile(profile, root=ROOT).notebooks, (profile, name)


# ----------------------------------------------------------------------------------------
# paired notebooks


def test_paired_notebooks_are_in_sync():
    assert build.pair_problems(ROOT) == []


def test_pair_check_reports_a_stale_ipynb(tmp_path):
    copy = tmp_path / "repo"
    (copy / "notebooks").mkdir(parents=True)
    (copy / "profiles").mkdir()
    for f in (ROOT / "notebooks").glob("optimum.*"):
        shutil.copy(f, copy / "notebooks" / f.name)
    md = copy / "notebooks" / "optimum.md"
    md.write_text(md.read_text().replace("K: int = 3  # number of classes", "K: int = 4  # number of classes"))
    problems = build.pair_problems(copy)
    assert len(problems) == 1 and "optimum: cell" in problems[0] and "jupytext --sync" in problems[0]
    (copy / "notebooks" / "optimum.ipynb").unlink()
    assert "is missing" in build.pair_problems(copy)[0]


# ----------------------------------------------------------------------------------------
# profiles


@pytest.mark.parametrize("profile", ["smoke", "ci", "paper"])
def test_shipped_profiles_fit_every_notebook(profile):
    jobs = profiles.plan(profiles.load_profile(profile, root=ROOT), root=ROOT, device="cpu")
    assert [j.name for j in jobs] == profiles.list_notebooks(ROOT)
    for job in jobs:
        assert job.parameters["device"] == "cpu" and job.output == ROOT / "book" / "chapters" / f"{job.name}.ipynb"


def test_paper_profile_says_cuda_and_labels_every_unpublished_setting():
    prof = profiles.load_profile("paper", root=ROOT)
    assert prof.defaults["device"] == "cuda"
    for line in (ROOT / "profiles" / "paper.yaml").read_text().splitlines():
        key = line.split("#")[0].strip()
        if key and ":" in key and not key.endswith(":") and not key.startswith(("description", "-")):
            assert "#" in line and ("paper" in line.split("#", 1)[1] or "companion" in line.split("#", 1)[1]), line


@pytest.fixture
def tiny_root(tmp_path):
    return make_root(
        tmp_path,
        {"good": GOOD, "bad": BAD},
        {
            "t": "defaults: {device: cpu}\nnotebooks:\n  good: {x: 3}\n  bad: {}\n",
            "unknown": "notebooks:\n  good: {x: 3, y: 1}\n",
            "wrongtype": "notebooks:\n  good: {x: '3'}\n",
            "yamlfloat": "notebooks:\n  good: {scale: 1e-2}\n",
            "nonotebook": "notebooks:\n  missing: {x: 1}\n",
            "badkey": "parameters: {}\n",
        },
    )


@pytest.mark.parametrize(
    "profile, fragments",
    [
        ("unknown", ["'unknown'", "notebook 'good'", "unknown parameter 'y'", "allowed: x (int), scale (float), seed (int), device (str)"]),
        ("wrongtype", ["notebook 'good'", "parameter 'x'", "must be int", "default 2", "got str '3'"]),
        ("yamlfloat", ["parameter 'scale'", "must be float", "write 1.0e-2"]),
        ("nonotebook", ["notebook 'missing'", "does not exist", "bad, good"]),
        ("badkey", ["unknown key 'parameters'", "description, defaults, notebooks"]),
    ],
)
def test_profile_errors_name_notebook_parameter_and_allowed_values(tiny_root, profile, fragments):
    with pytest.raises(ProfileError) as err:
        profiles.plan(profiles.load_profile(profile, root=tiny_root), root=tiny_root)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_missing_profile_lists_the_available_ones(tiny_root):
    with pytest.raises(ProfileError, match="available: badkey, nonotebook, t, unknown, wrongtype, yamlfloat"):
        profiles.load_profile("nosuch", root=tiny_root)


def test_only_selects_by_glob_or_substring_and_rejects_no_match(tiny_root):
    prof = profiles.load_profile("t", root=tiny_root)
    assert [j.name for j in profiles.plan(prof, root=tiny_root, only="go")] == ["good"]
    assert [j.name for j in profiles.plan(prof, root=tiny_root, only="*d")] == ["bad", "good"]
    with pytest.raises(ProfileError, match="matches no notebook"):
        profiles.plan(prof, root=tiny_root, only="zzz")


def test_unknown_parameter_is_rejected_before_any_kernel_starts(tiny_root, monkeypatch, capsys):
    import papermill

    def no_kernel(*args, **kwargs):  # pragma: no cover - reaching this is the failure
        raise AssertionError("a kernel was started")

    monkeypatch.setattr(papermill, "execute_notebook", no_kernel)
    with pytest.raises(ProfileError, match="unknown parameter 'y'"):
        regenerate("unknown", root=tiny_root, build_book=False, progress=False)
    code = cli.main(["--root", str(tiny_root), "--profile", "unknown", "--no-book", "--no-progress"])
    assert code == 2
    assert "unknown parameter 'y'" in capsys.readouterr().err
    assert not (tiny_root / "outputs").exists()


def test_unavailable_device_is_rejected_before_any_kernel_starts(tiny_root):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ProfileError, match="device 'cuda'.*--device cpu"):
        profiles.plan(profiles.load_profile("t", root=tiny_root), root=tiny_root, device="cuda")


def test_failing_notebook_keeps_previous_output_and_exits_nonzero(tiny_root, capsys, monkeypatch):
    # the library's own sources are part of a run's inputs; freeze them for this test
    monkeypatch.setattr(profiles, "library_hash", lambda root: "fixed")
    out = tiny_root / "book" / "chapters"
    out.mkdir(parents=True)
    previous = b'{"previous": "last good output"}'
    (out / "bad.ipynb").write_bytes(previous)

    code = cli.main(["--root", str(tiny_root), "--profile", "t", "--no-book", "--no-progress"])
    printed = capsys.readouterr().out

    assert code == 1
    assert (out / "bad.ipynb").read_bytes() == previous
    assert "FAILED bad (previous output kept)" in printed
    assert "AssertionError: x must be negative for this notebook to pass" in printed
    assert [line.split()[:2] for line in printed.splitlines() if line.startswith(("good ", "bad "))] == [["bad", "failed"], ["good", "ok"]]
    assert not list(out.glob("*.partial"))

    good = json.loads((out / "good.ipynb").read_text())
    meta = good["metadata"]["ufm"]
    assert meta["provenance"]["profile"] == "t" and meta["provenance"]["parameters"] == {"x": 3}
    assert meta["provenance"]["device"] == "cpu" and meta["provenance"]["wall_time_s"] > 0
    assert [c["name"] for c in meta["checks"]] == ["double"] and meta["checks"][0]["passed"]
    assert "jupytext" not in good["metadata"]
    box = [c for c in good["cells"] if "ufm-provenance" in c["metadata"].get("tags", [])]
    assert len(box) == 1 and "Profile **t**" in "".join(box[0]["source"])
    assert good["cells"].index(box[0]) == 1  # right under the title
    injected = [c for c in good["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1 and "x = 3" in "".join(injected[0]["source"]) and "hide-cell" in injected[0]["metadata"]["tags"]

    state = json.loads((tiny_root / "outputs" / "status.json").read_text())
    assert state["bad"]["latest_run"]["status"] == "failed" and state["bad"]["latest_run"]["profile"] == "t"
    assert state["bad"]["latest_run"]["error"].startswith("AssertionError: x must be negative")
    assert state["good"]["latest_run"]["status"] == "ok"
    assert [(c["name"], c["kind"], c["passed"]) for c in state["good"]["checks"]] == [("double", "identity", True)]
    status = (tiny_root / "outputs" / "status.md").read_text()
    assert "| R0 | {doc}`good </book/chapters/good>` | identity | 2x = x + x |" in status
    assert "| bad | - | - | - | - | no good run yet | failed (" in status  # its previous file is no executed notebook

    # unchanged inputs: the good notebook is not executed again (no kernel)
    report = regenerate("t", root=tiny_root, only="good", build_book=False, progress=False)
    assert [(o.name, o.status) for o in report.outcomes] == [("good", "up to date")] and report.exit_code == 0


def test_input_hash_follows_text_parameters_profile_and_library(tiny_root, monkeypatch):
    monkeypatch.setattr(profiles, "library_hash", lambda root: "v1")
    t = profiles.load_profile("t", root=tiny_root)

    def digest(profile=t, **kw):
        return profiles.plan(profile, root=tiny_root, only="good", **kw)[0].input_hash

    first = digest()
    assert digest() == first
    assert digest(device="cpu") == first  # "cpu" is the profile's value already
    assert digest(profiles.Profile("t", "", {"device": "cpu"}, {"good": {"x": 4}})) != first
    assert digest(profiles.Profile("other", "", {"device": "cpu"}, {"good": {"x": 3}})) != first
    monkeypatch.setattr(profiles, "library_hash", lambda root: "v2")
    assert digest() != first
    monkeypatch.setattr(profiles, "library_hash", lambda root: "v1")
    md = tiny_root / "notebooks" / "good.md"
    md.write_text(md.read_text() + "\nSome more text.\n")
    assert digest() != first


def test_failed_notebook_without_earlier_run_gets_a_page_with_the_error(tiny_root, capsys):
    code = cli.main(["--root", str(tiny_root), "--profile", "t", "--only", "bad", "--no-book", "--no-progress"])
    assert code == 1
    assert "FAILED bad (no earlier good run: its page shows the error)" in capsys.readouterr().out
    page = json.loads((tiny_root / "book" / "chapters" / "bad.ipynb").read_text())
    assert page["metadata"]["ufm"]["placeholder"] is True
    text = "".join("".join(c["source"]) for c in page["cells"])
    assert text.startswith("# Bad") and "This chapter has not been computed" in text
    assert "AssertionError: x must be negative for this notebook to pass" in text
    # a placeholder is never up to date: the next run executes the notebook again
    report = regenerate("t", root=tiny_root, only="bad", build_book=False, progress=False)
    assert [o.status for o in report.outcomes] == ["failed"]


def test_declared_checks_that_did_not_run_are_listed_as_not_checked(tmp_path):
    body = """
    from ufmlib.notebook import check, not_checked, require_checks
    require_checks("ran", "skipped", "forgotten")
    check("ran", 1.0, 1.0, rtol=1e-12, result="R1", kind="reproduction", description="one is one")
    not_checked("skipped", result="R2", kind="reproduction", description="a branch", reason="no seed converged")
    """
    root = make_root(tmp_path, {"claims": notebook_text("Claims", SEED_AND_DEVICE, body)},
                     {"t": "notebooks: {claims: {}}\n"})
    report = regenerate("t", root=root, build_book=False, progress=False)
    assert report.exit_code == 0
    state = json.loads((root / "outputs" / "status.json").read_text())
    checks = {c["name"]: c for c in state["claims"]["checks"]}
    assert checks["ran"]["status"] == "checked" and checks["ran"]["passed"] is True
    assert checks["skipped"]["status"] == "not checked" and checks["skipped"]["reason"] == "no seed converged"
    assert checks["forgotten"]["status"] == "not checked" and checks["forgotten"]["reason"] == "did not run"
    status = (root / "outputs" / "status.md").read_text()
    assert "| R1 | **1 of 1** |" in status and "| R2 | **none** |" in status
    assert "a branch - no seed converged." in status


def test_out_dir_elsewhere_needs_no_book(tiny_root, tmp_path):
    with pytest.raises(ValueError, match="out_dir"):
        regenerate("t", root=tiny_root, out_dir=tmp_path / "elsewhere", progress=False)


def test_register_adds_the_subcommand():
    import argparse

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["regenerate", "--profile", "smoke", "--only", "opt*", "--device", "cpu", "--no-book", "--force"])
    assert (args.command, args.profile, args.only, args.device, args.no_book, args.force) == ("regenerate", "smoke", "opt*", "cpu", True, True)
    assert args.handler is cli.run
    assert parser.parse_args(["regenerate"]).profile == "ci"


# ----------------------------------------------------------------------------------------
# launch buttons of executed pages


def test_python_m_ufmlib_book_takes_the_options_of_ufm_regenerate():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "ufmlib.book", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m ufmlib.book")
    for option in ("--profile", "--only", "--device", "--no-book", "--force", "--root", "--no-progress"):
        assert option in proc.stdout, option


def test_science_modules_never_import_the_book_machinery():
    import ast

    for path in sorted((ROOT / "ufmlib").rglob("*.py")):
        package = path.relative_to(ROOT).parent.parts  # ("ufmlib",), ("ufmlib", "theory"), ...
        if package[:2] == ("ufmlib", "book"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = list(package[:len(package) - node.level + 1]) if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module, *(f"{module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n == "ufmlib.book" or n.startswith("ufmlib.book.") for n in names), (path.name, names)


def test_ufm_command_finds_regenerate_through_its_entry_point():
    from importlib.metadata import entry_points

    from ufmlib.cli import COMMANDS, build_parser

    assert [e.value for e in entry_points(group=COMMANDS) if e.name == "regenerate"] == ["ufmlib.book.cli:register"]
    args = build_parser().parse_args(["regenerate", "--no-book"])
    assert args.handler is cli.run and args.no_book and args.profile == "ci"


def test_repository_path_maps_executed_pages_to_paired_notebooks():
    ext = load_extension()
    assert ext.repository_path("book/chapters/optimum") == "notebooks/optimum.ipynb"
    assert ext.repository_path("book/intro") is None


def test_config_loads_the_extension_from_the_book_folder_and_keeps_it_out_of_the_pages():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["local_extensions"] == {"ufm_pages": "book/_ext"}
    assert "book/_ext" in config["exclude_patterns"]
    assert "book/_ext" not in (ROOT / "_toc.yml").read_text()
    source = (ROOT / "book" / "_ext" / "ufm_pages.py").read_text()
    assert "ufmlib" not in "".join(line for line in source.splitlines() if line.startswith(("import", "from")))


def test_launch_links_are_rewritten_to_the_paired_notebook(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "optimum.ipynb").write_text("{}")
    colab = "https://colab.research.google.com/github/o/r/blob/main/book/chapters/optimum.ipynb"
    context = {"header_buttons": [
        {"label": "launch-buttons", "buttons": [{"url": colab}]},
        {"label": "download-buttons", "buttons": [{"url": "_sources/book/chapters/optimum.ipynb"}]},
    ]}
    app = type("App", (), {"srcdir": str(tmp_path)})()
    load_extension().rewrite_launch_links(app, "book/chapters/optimum", "page.html", context, None)
    assert context["header_buttons"][0]["buttons"][0]["url"] == "https://colab.research.google.com/github/o/r/blob/main/notebooks/optimum.ipynb"
    assert context["header_buttons"][1]["buttons"][0]["url"] == "_sources/book/chapters/optimum.ipynb"


# ----------------------------------------------------------------------------------------
# provenance and checks


def test_check_passes_within_tolerance_and_records_the_worst_entry():
    rec = notebook.check("c", [1.0, 2.0 + 1e-13], [1.0, 2.0], rtol=1e-12, result="R1", kind="reproduction", description="d")
    assert rec.passed and rec.tolerance_type == "rel" and rec.kind == "reproduction" and rec.size == 2 and rec.theory == 2.0
    assert rec.error == pytest.approx(5e-14, rel=1e-3)
    rec = notebook.check("c", [[1.0, 1.0], [2.0, 2.0]], [[1.0], [2.0]], atol=0.0, result="R1", kind="identity", description="d")
    assert rec.passed and rec.size == 4


def test_check_failure_raises_with_values_and_tolerance():
    with pytest.raises(notebook.ReproductionError, match=r"R2 c \(d\): measured 1.001, theory 1.0, rel error 1.000e-03 > tolerance 1.0e-06"):
        notebook.check("c", 1.001, 1.0, rtol=1e-6, result="R2", kind="reproduction", description="d")
    with pytest.raises(notebook.ReproductionError):
        notebook.check("c", float("nan"), 0.0, atol=1.0, result="R2", kind="reproduction", description="d")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({}, "exactly one of rtol or atol"), ({"rtol": 1e-3, "atol": 1e-3}, "exactly one"),
     ({"atol": -1.0}, "atol must be"), ({"rtol": 1e-3, "theory": 0.0}, "use atol"),
     ({"rtol": 1e-3, "kind": "rel"}, "kind must be one of reproduction, construction, identity")],
)
def test_check_argument_errors(kwargs, fragment):
    args = {"measured": 1.0, "theory": 1.0, "result": "R1", "description": "d", "kind": "identity", **kwargs}
    with pytest.raises(ValueError, match=fragment):
        notebook.check("c", **args)


def test_not_checked_and_glue_claim_never_state_an_unchecked_result():
    ran = notebook.check("a", 1.0, 1.0, rtol=1e-12, result="R8", kind="reproduction", description="levels")
    missing = notebook.not_checked("b", result="R8", kind="reproduction", description="outliers equalise",
                                   reason="no screened seed reached deep neural collapse")
    assert missing.status == "not checked" and missing.passed is None
    assert notebook.glue_claim("c", [ran], shown="The levels agree.") == "The levels agree."
    text = notebook.glue_claim("c", [ran, missing], shown="The levels agree.")
    assert "levels agree" not in text and text.startswith("**Not checked in this run**")
    assert "outliers equalise" in text and "no screened seed reached deep neural collapse" in text
    assert "did not run" in notebook.glue_claim("c", None, shown="x")
    with pytest.raises(ValueError, match="reason"):
        notebook.not_checked("b", result="R8", kind="reproduction", description="d", reason=" ")
    with pytest.raises(ValueError, match="distinct"):
        notebook.require_checks("a", "a")


def test_glue_bundles_numbers_as_parseable_text():
    import numpy as np
    import torch

    assert notebook._bundle(np.float64(0.25)) == {"text/plain": "0.25"}
    assert notebook._bundle(torch.tensor(3)) == {"text/plain": "3"}
    assert notebook._bundle("a $x$") == {"text/plain": "a $x$", "text/markdown": "a $x$"}


def test_provenance_keeps_changed_parameters_and_renders_a_box():
    prov = provenance.collect(notebook="nb", profile="smoke", device="cpu", parameters={"n": 5, "K": 3},
                              defaults={"n": 40, "K": 3}, wall_time_s=2.5, root=ROOT)
    assert prov.parameters == {"n": 5}
    assert prov.ufmlib_version not in ("", "unknown")
    box = provenance.markdown_box(prov)
    assert box.startswith(":::{admonition} How this page was computed") and box.endswith(":::")
    assert "Profile **smoke** on device `cpu`" in box and "`n = 5`" in box and "2.5 s" in box
    assert provenance.markdown_box(prov.as_dict()) == box


def test_save_figure_is_deterministic(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from ufmlib import plotting

    def draw():
        fig, ax = plotting.figure()
        plotting.plot_spectrum_with_levels([3.0, 1.0, 1e-20], {"level": 1.0}, ax=ax)
        return fig

    first = plotting.save_figure(draw(), "spec", directory=tmp_path / "a", formats=("png", "pdf", "svg"))
    second = plotting.save_figure(draw(), "spec", directory=tmp_path / "b", formats=("png", "pdf", "svg"))
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    with pytest.raises(ValueError, match="name"):
        plotting.save_figure(draw(), "../x", directory=tmp_path)
    with pytest.raises(ValueError, match="formats"):
        plotting.save_figure(draw(), "x", directory=tmp_path, formats=("jpg",))
