"""The one-way layering, checked in fresh interpreters: tasks/ imports neither Ray nor the
orchestrator; the analysis side, and blend/audit/report without --reinfer, import no Ray."""
import json
import subprocess
import sys
from pathlib import Path

from tests.fake_logits import fake_models, make_people, make_targets, write_experiment

REPO = Path(__file__).resolve().parent.parent
LOADED = ("import json, sys; print(json.dumps(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.') "
          "or m == 'orchestrator' or m.startswith('orchestrator.'))))")


def loaded_after(code: str) -> list[str]:
    """Ray and orchestrator modules loaded after running `code` in a new interpreter."""
    done = subprocess.run([sys.executable, "-c", f"{code}\n{LOADED}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tasks_import_neither_ray_nor_the_orchestrator():
    modules = sorted(p.stem for p in (REPO / "tasks").glob("*.py") if p.stem != "__init__")
    assert "job" in modules and "infer" in modules
    assert loaded_after("".join(f"import tasks.{m}\n" for m in modules)) == []


def test_the_analysis_side_imports_no_ray():
    modules = sorted(p.stem for p in (REPO / "orchestrator" / "analysis").glob("*.py") if p.stem != "__init__")
    assert {"blending", "audit", "report", "results", "ensemble"} <= set(modules)
    loaded = loaded_after("".join(f"import orchestrator.analysis.{m}\n" for m in modules))
    assert not [m for m in loaded if m.startswith("ray")]
    assert not [m for m in loaded if m.startswith("orchestrator.cluster")]


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
    assert "orchestrator.analysis.blending" in loaded  # the commands really ran


def test_help_imports_nothing_heavy():
    """`--help` answers at once: no torch, Ray, pandas or timm is imported before the arguments
    are parsed (they took 6-16 s), and every command names what it writes, with examples."""
    for command in ("run", "prepare", "search", "blend", "audit", "report", "demo", "explain"):
        code = (f"import io, contextlib, sys\nfrom orchestrator import {command}\nout = io.StringIO()\n"
                f"with contextlib.redirect_stdout(out):\n    try:\n        {command}.main(['--help'])\n"
                f"    except SystemExit:\n        pass\n"
                f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'ray', 'pandas', 'timm', 'sklearn'}})\n"
                f"assert not heavy, heavy\nassert 'examples:' in out.getvalue() and 'writes:' in out.getvalue(), out.getvalue()")
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
