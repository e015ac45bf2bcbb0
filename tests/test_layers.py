"""The one-way layering, checked in fresh interpreters: tasks/ imports neither Ray nor the
orchestrator; the analysis side, and blend/audit/report without --reinfer, import no Ray.
Modules are found by walking the packages, so a module moved into a sub-package is still checked."""
import json
import pkgutil
import subprocess
import sys

from tests.helpers.fake_logits import fake_models, make_people, make_targets, write_experiment
from tests.helpers.specs import REPO

LOADED = ("import json, sys; print(json.dumps(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.') "
          "or m == 'orchestrator' or m.startswith('orchestrator.'))))")


def modules_under(package: str) -> list[str]:
    """Every module and sub-package of `package`, by walking its folders (nothing imported)."""
    folder = REPO.joinpath(*package.split("."))
    return sorted(m.name for m in pkgutil.walk_packages([str(folder)], prefix=f"{package}.")
                  if not m.name.endswith("__main__"))


def loaded_after(code: str) -> list[str]:
    """Ray and orchestrator modules loaded after running `code` in a new interpreter."""
    done = subprocess.run([sys.executable, "-c", f"{code}\n{LOADED}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tasks_import_neither_ray_nor_the_orchestrator():
    modules = modules_under("tasks")
    assert {"tasks.job", "tasks.train.fold_models", "tasks.spec.experiment", "tasks.synth.draw"} <= set(modules)
    assert loaded_after("".join(f"import {m}\n" for m in modules)) == []


def test_the_analysis_side_imports_no_ray():
    modules = modules_under("orchestrator.analysis")
    assert {"orchestrator.analysis.ensembles.fitting", "orchestrator.analysis.mislabels.contradictions",
            "orchestrator.analysis.reporting.page", "orchestrator.analysis.results"} <= set(modules)
    loaded = loaded_after("".join(f"import {m}\n" for m in modules))
    assert not [m for m in loaded if m.startswith("ray")]
    assert not [m for m in loaded if m.startswith("orchestrator.cluster")]


def test_no_folder_of_code_is_a_flat_list_of_prefixed_files():
    """A package holds at most 15 modules, and no two of its modules share a name prefix that
    would stand for a sub-package (report_*, explain_*, *_spec ...)."""
    for package in ("tasks", "orchestrator"):
        folders = {REPO.joinpath(*package.split("."))} | {
            REPO.joinpath(*m.split(".")) for m in modules_under(package) if REPO.joinpath(*m.split(".")).is_dir()}
        for folder in folders:
            stems = [p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__")]
            assert len(stems) <= 15, (folder, len(stems))
            heads = [s.split("_")[0] for s in stems if "_" in s]
            tails = [s.rsplit("_", 1)[1] for s in stems if "_" in s]
            shared = {h for h in heads if heads.count(h) + stems.count(h) > 2} | {t for t in tails if tails.count(t) > 2}
            assert not shared, (folder, shared)


def test_a_command_and_a_library_module_never_share_a_name():
    commands = {p.stem for p in (REPO / "orchestrator").glob("*.py")} - {"__init__", "cli"}
    library = {m.rsplit(".", 1)[1] for p in ("orchestrator.analysis", "orchestrator.cluster", "tasks")
               for m in modules_under(p)}
    assert {"run", "blend", "audit", "report"} <= commands
    assert not commands & library, commands & library


def test_blend_audit_and_report_run_without_ray(tmp_path):
    people = make_people(60, 3, seed=1)
    answers = make_targets(100, seed=2)
    exp = write_experiment(tmp_path, people, fake_models(people, answers, 3, {"a": {}, "b": {}}), answers, 3,
                           rounds=5)
    code = (f"from orchestrator import audit, blend, report\n"
            f"assert blend.main(['--results', {str(exp)!r}]) == 0\n"
            f"assert audit.main(['--results', {str(exp)!r}]) == 0\n"
            f"assert report.main(['--results', {str(exp)!r}]) == 0")
    loaded = loaded_after(code)
    assert (exp / "blend" / "submission.csv").is_file() and (exp / "audit.csv").is_file()
    assert not [m for m in loaded if m.startswith("ray")]
    assert "orchestrator.analysis.ensembles.fitting" in loaded  # the commands really ran


def test_help_imports_nothing_heavy():
    """`--help` answers at once: no torch, Ray, pandas or timm is imported before the arguments
    are parsed (they took 6-16 s), and every command names what it writes, with examples."""
    for command in ("run", "prepare", "search", "blend", "audit", "report", "demo", "explain", "predict", "export"):
        code = (f"import io, contextlib, sys\nfrom orchestrator import {command}\nout = io.StringIO()\n"
                f"with contextlib.redirect_stdout(out):\n    try:\n        {command}.main(['--help'])\n"
                f"    except SystemExit:\n        pass\n"
                f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'ray', 'pandas', 'timm', 'sklearn'}})\n"
                f"assert not heavy, heavy\nassert 'examples:' in out.getvalue() and 'writes:' in out.getvalue(), out.getvalue()")
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"


def test_the_analysis_side_logs_through_a_callable_and_never_prints():
    """Library code says what it does through a `log` callable (tasks.log); the commands pick
    the stream. A bare print() in the analysis side would pick it for them."""
    import ast

    offenders = []
    for path in (REPO / "orchestrator" / "analysis").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
