"""The blend report: one self-contained page whose tables agree with the blend's outputs,
with the summary first, class names, training curves and the audit's suspects."""
from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from orchestrator import audit, blend, report
from orchestrator.analysis.ensembles.recipes import describe_method, plan_recipes
from orchestrator.analysis.mislabels.suspects import pick_suspects
from orchestrator.analysis.reporting import page as reporting
from orchestrator.analysis.results import OofLogits
from orchestrator.analysis.results_folder import load_experiment
from tasks.job_io import planned_jobs
from tasks.labels import MASK_STEMS
from tasks.logits import read_logits
from tasks.spec.experiment import BlendSpec
from tests.helpers.fake_logits import (
    fake_models,
    inject_mislabels,
    make_people,
    make_targets,
    model_logits,
    write_experiment,
)

N_SPLITS = 3
MODELS = {"wide": {}, "narrow": {"strength": (2.0, 1.5, 2.0)}, "blind": {"strength": (0.0, 0.0, 0.0)}}
JOB_SECONDS = 12.5  # every fake job's result.json seconds


def write_fake_jobs(exp, people) -> None:
    """Each planned job's folder with result.json and a 4-epoch metrics.csv, and logs/<job>.log;
    plus a finished job of settings since changed, which the report must not count."""
    (exp / "logs").mkdir(exist_ok=True)
    rows = read_logits(exp / "oof.parquet")[2].rows_hash  # the rows the fake logits say they are of
    (exp / "manifest.json").write_text(json.dumps({"rows_hash": rows}))
    planned = [(p.model, p.fold, p.out_dir) for p in planned_jobs(load_experiment(exp), rows, None, exp / "jobs")]
    for model, k, job in planned + [("wide", 0, exp / "jobs" / "wide-fold0-0000abcd")]:
        job.mkdir(parents=True)
        (job / "result.json").write_text(json.dumps({"model": model, "fold": k, "seconds": JOB_SECONDS,
                                                     "best_epoch": 3, "epochs_run": 4}))
        epochs = np.arange(1, 5)
        pd.DataFrame({"epoch": epochs, "train_loss": 3 - 0.5 * epochs, "val_loss": 2.8 - 0.3 * epochs,
                      "val_macro_f1": 0.1 * epochs + 0.01 * k}).to_csv(job / "metrics.csv", index=False)
        (exp / "logs" / f"{job.name}.log").write_text("epoch 1/4 ...\n")


def write_photos(root, people) -> None:
    """Tiny JPEGs for every person's seven photos, plus a macOS '._' file the page must skip."""
    for person in people.person.unique():
        folder = root / "train" / "images" / person
        folder.mkdir(parents=True)
        for i, stem in enumerate(MASK_STEMS):
            Image.new("RGB", (12, 16), (20 * i, 100, 150)).save(folder / f"{stem}.jpg")
        (folder / "._mask1.jpg").write_bytes(b"not an image")


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    # Models see the true labels, the OOF targets are the given ones: the audit has suspects.
    bad = inject_mislabels(make_people(90, N_SPLITS, seed=6), n_gender=4, n_swap=3, n_age=4, seed=1)
    people = bad.given
    answers = make_targets(60, seed=7)
    models = fake_models(bad.true, answers, N_SPLITS, MODELS)
    exp = write_experiment(tmp, people, models, answers, N_SPLITS, rounds=10)
    write_fake_jobs(exp, people)
    write_photos(tmp / "data", people)
    truth = tmp / "data" / "truth" / "eval_answers.csv"
    assert blend.main(["--results", str(exp), "--set", "blend.decode=joint", "--truth", str(truth)]) == 0
    assert audit.main(["--results", str(exp)]) == 0
    (exp / "report.html").unlink()  # blend wrote one; the command must write it again
    assert report.main(["--results", str(exp)]) == 0
    return exp


def _page(exp) -> str:
    return (exp / "report.html").read_text()


def _weights(exp) -> dict:
    return json.loads((exp / "blend" / "weights.json").read_text())


def _oof(exp) -> OofLogits:
    from orchestrator.analysis.results import load_oof

    return load_oof(exp / "oof.parquet", N_SPLITS, list(MODELS))


def _summary(page: str) -> str:
    return re.search(r'<section id="summary">(.*?)</section>', page, re.S).group(1)


def test_report_is_self_contained_with_only_relative_links(reported):
    page = _page(reported)
    assert not re.search(r'src="(?!data:)', page) and "<script" not in page and "<link" not in page
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert "blend/submission.csv" in hrefs and "audit.csv" in hrefs and "logs/" in hrefs
    assert all("://" not in h and not h.startswith("/") for h in hrefs)
    assert all((reported / h).exists() for h in hrefs)  # every link leads to a file of the experiment
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 3 + len(MODELS)  # 18x18, attributes, correlation, one curve figure per model
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)


def test_summary_names_the_choice_its_scores_and_the_true_score(reported):
    page, weights = _page(reported), _weights(reported)
    board = pd.read_csv(reported / "blend" / "leaderboard.csv")
    chosen = board[board.chosen].iloc[0]
    summary = _summary(page)
    assert page.index('<section id="summary">') < page.index('<section id="methods">')
    assert f'<span id="chosen-method">{html.escape(weights["method"])}</span>' in summary
    assert f"<b>{weights['nested']['macro_f1']:.4f}</b>" in summary
    assert f"<b>{weights['in_sample']['macro_f1']:.4f}</b>" in summary
    # blend --truth recorded the submission's true score, the same the leaderboard has
    assert weights["truth"]["macro_f1"] == pytest.approx(chosen.truth_macro_f1)
    assert weights["truth"]["file"].endswith("eval_answers.csv") and weights["seconds"] >= 0
    assert f"<b>{chosen.truth_macro_f1:.4f}</b> macro F1" in summary
    assert f"{JOB_SECONDS * len(MODELS) * N_SPLITS:.1f} s in {len(MODELS) * N_SPLITS} jobs" in summary
    best = reporting.fold_table(_oof(reported), reported / "leaderboard.csv")["OOF pooled"].idxmax()
    assert f"<b>{best}</b>" in summary


def test_methods_table_highlights_the_chosen_row_and_explains_every_name(reported):
    page, weights = _page(reported), _weights(reported)
    table = re.search(r'<table id="methods">(.*?)</table>', page, re.S).group(1)
    chosen_rows = re.findall(r'<tr class="chosen">(.*?)</tr>', table, re.S)
    assert len(chosen_rows) == 1 and f">{html.escape(weights['method'])}</span>" in chosen_rows[0]
    glossary = re.search(r'<ul class="glossary">(.*?)</ul>', page, re.S).group(1)
    for method in pd.read_csv(reported / "blend" / "leaderboard.csv").method:
        assert f">{html.escape(method)}</span>" in table
        assert f"<code>{html.escape(method)}</code>: " in glossary


def test_every_planned_method_name_has_an_explanation():
    spec = BlendSpec(decode="both", temperature=True, refine=True, class_offsets=True)
    names = [r.name for r in plan_recipes(spec)]
    assert {"single", "hard_equal", "soft_greedy_log_loss+attr", "soft_greedy_refined_temp+attr+offsets"} <= set(names)
    for name in names:
        text = describe_method(name)
        assert "does not plan" not in text and "+" not in text, name
        assert ("temperature" in text) == ("_temp" in name)
        assert ("per-attribute" in text) == ("+attr" in name)
        assert ("offsets" in text) == ("+offsets" in name)
    assert "does not plan" in describe_method("stacked_lightgbm")


def test_per_class_rows_carry_class_names_and_support(reported):
    page = _page(reported)
    pred = pd.read_parquet(reported / "blend" / "oof_predictions.parquet")
    support = np.bincount(pred.target, minlength=18)
    f1 = f1_score(pred.target, pred.nested, labels=range(18), average=None, zero_division=0)
    section = re.search(r'<section id="per-class">(.*?)</section>', page, re.S).group(1)
    for c, name in enumerate(reporting.CLASS_NAMES):
        row = re.search(rf'<td class="text">{re.escape(html.escape(name))}</td><td>{c}</td><td>(\d+)</td>'
                        r'<td>\d+</td><td>[0-9.]+</td><td>[0-9.]+</td><td><span class="track">.*?</span></span>'
                        r'([0-9.]+)</td>', section)
        assert int(row.group(1)) == support[c] and float(row.group(2)) == pytest.approx(f1[c], abs=1e-4)
    assert "wear/male/&lt;30" in section and "not_worn/female/&gt;=60" in section


def test_training_curves_per_model_with_log_links(reported):
    section = re.search(r'<section id="curves">(.*?)</section>', _page(reported), re.S).group(1)
    logs = re.findall(r'href="logs/([^"]+)\.log"', section)
    planned = {p.job_id for p in planned_jobs(load_experiment(reported), read_logits(reported / "oof.parquet")[2].rows_hash,
                                              None, reported / "jobs")}
    assert set(logs) == planned and "wide-fold0-0000abcd" not in logs  # the spec's jobs only, not stale ones
    for model in MODELS:
        assert f'alt="training curves of {model}"' in section


def test_audit_shows_top_suspects_with_their_photos(reported):
    table = pd.read_csv(reported / "audit.csv")
    section = re.search(r'<section id="audit">(.*?)</section>', _page(reported), re.S).group(1)
    shown = pick_suspects(table, 5).head(30)
    assert "suspect" in table.columns  # the audit ranks everyone and marks its suspects
    assert 0 < len(shown) < len(table) and shown.suspect.all()  # the suspects alone, not everyone ranked
    for person in shown.person:
        assert f'<td class="text">{person}</td>' in section
    rows = re.findall(r"<tr>(.*?)</tr>", section.split("<tbody>")[1], re.S)
    photos = [len(re.findall(r'src="data:image/jpeg;base64,', r)) for r in rows]
    assert photos == [len(MASK_STEMS)] * len(shown)  # each shown person's seven photos, the '._' file skipped
    assert "no suspect column" not in section and "older than this blend" not in section


def test_pick_suspects_reads_both_audit_formats():
    old = pd.DataFrame({"person": ["a", "a", "b", "c", "d"], "field": ["incorrect_mask", "normal", "gender", "gender",
                                                                         "gender"],
                        "attribute": ["mask", "mask", "gender", "gender", "gender"], "rank": [1, 1, 1, 2, 3],
                        "score": [0.1, 0.1, 0.2, 0.3, 0.4], "given": "x", "suggested": "y"})
    picked = pick_suspects(old, per_attribute=2)
    assert list(zip(picked.person, picked.attribute)) == [("b", "gender"), ("c", "gender"), ("a", "mask")]
    new = pd.DataFrame({"person": ["a", "b", "c"], "attribute": ["age", "gender", "gender"], "rank": [1, 2, 1],
                        "score": [0.1, 0.5, 0.2], "p_wrong": [0.9, 0.2, 0.8], "given": "x", "suggested": "y",
                        "suspect": [True, False, True]})
    assert list(pick_suspects(new, per_attribute=1).person) == ["c", "a"]  # gender first, then age


def test_intervals_and_both_comparisons_are_shown_when_the_blend_has_them(reported):
    outputs = reporting.read_blend_outputs(reported)
    board = outputs.leaderboard.assign(nested_macro_f1_low=outputs.leaderboard.nested_macro_f1 - 0.0123,
                                       nested_macro_f1_high=outputs.leaderboard.nested_macro_f1 + 0.0234)
    versus = [{"method": "soft_equal", "baseline": "the equal soft vote", "chosen": False, "difference": 0.0042,
               "interval": [-0.01, 0.02], "clearly_better": False},
              {"method": "single", "baseline": "the best single model", "chosen": False, "difference": 0.031,
               "interval": [0.012, 0.05], "clearly_better": True}]
    weights = {**outputs.weights, "versus": versus}
    weights.pop("truth")
    page = reporting.build_report(reported, _oof(reported), replace(outputs, weights=weights, leaderboard=board))
    chosen = board[board.method == weights["method"]].iloc[0]
    summary = _summary(page)
    interval = f"[{chosen.nested_macro_f1 - 0.0123:.4f}, {chosen.nested_macro_f1 + 0.0234:.4f}]"
    assert f"<b>{chosen.nested_macro_f1:.4f}</b> {interval}" in summary
    assert ("<th>versus the equal soft vote</th><td><span class=\"warn\">not clearly better than <code>soft_equal"
            "</code></span>: difference +0.0042 [-0.0100, 0.0200]") in summary
    assert ("<th>versus the best single model</th><td><span class=\"good\">clearly better than <code>single"
            "</code></span>: difference +0.0310 [0.0120, 0.0500]") in summary
    assert f'<small class="ci">{interval}</small>' in page
    assert f"<b>{chosen.truth_macro_f1:.4f}</b>" in summary  # the leaderboard's column, without weights' truth
    # The equal vote chosen: said so, not compared with itself.
    itself = {**versus[0], "chosen": True, "difference": None, "interval": None}
    page = reporting.build_report(reported, _oof(reported), replace(
        outputs, weights={**weights, "versus": [itself, versus[1]]}, leaderboard=board))
    assert ("<th>versus the equal soft vote</th><td>the chosen method is the equal soft vote itself "
            "(<code>soft_equal</code>)") in _summary(page)
    # An older weights.json with its one versus_simpler still shows it.
    old = {k: v for k, v in weights.items() if k != "versus"} | {"versus_simpler": versus[0]}
    page = reporting.build_report(reported, _oof(reported), replace(outputs, weights=old, leaderboard=board))
    assert "<th>versus simpler</th><td><span class=\"warn\">not clearly better than <code>soft_equal" in _summary(page)


def _copy_blend(reported, dest, drop=()) -> None:
    """dest/ with the experiment's spec, OOF logits and blend outputs only; weights.json without `drop`."""
    for name in ("spec.yaml", "oof.parquet"):
        (dest / name).write_bytes((reported / name).read_bytes())
    (dest / "blend").mkdir()
    for name in ("leaderboard.csv", "oof_predictions.parquet"):
        (dest / "blend" / name).write_bytes((reported / "blend" / name).read_bytes())
    weights = {k: v for k, v in _weights(reported).items() if k not in drop}
    (dest / "blend" / "weights.json").write_text(json.dumps(weights))


def test_a_bare_results_folder_still_reports_what_is_missing(reported, tmp_path):
    _copy_blend(reported, tmp_path, drop=("truth", "created", "seconds"))
    board = pd.read_csv(reported / "blend" / "leaderboard.csv").drop(columns="truth_macro_f1")
    board.to_csv(tmp_path / "blend" / "leaderboard.csv", index=False)
    page = reporting.build_report(tmp_path, _oof(reported), reporting.read_blend_outputs(tmp_path))
    summary = _summary(page)
    assert "not known" in summary and "no job results found" in summary and "audit.csv (absent)" in summary
    assert "No job metrics found" in page and "No audit.csv" in page


def test_offsets_by_value_name_and_the_new_audit_format(reported, tmp_path):
    _copy_blend(reported, tmp_path)
    outputs = reporting.read_blend_outputs(tmp_path)
    people = pd.read_parquet(reported / "blend" / "oof_predictions.parquet").person.unique()[:3]
    pd.DataFrame({"person": people, "attribute": ["gender", "age", "gender"], "rank": [1, 1, 2],
                  "score": [0.1, 0.2, 0.9], "p_wrong": [0.91, 0.62, 0.05], "given": ["male", "<30", "female"],
                  "suggested": ["female", "30-59", "female"], "suspect": [True, True, False]}).to_csv(
        tmp_path / "audit.csv", index=False)
    os.utime(tmp_path / "audit.csv", (0, 0))  # written before the blend: from other probabilities
    joint = {**outputs.weights, "offsets": {"classes": [0.0] * 17 + [0.25]}}
    page = reporting.build_report(tmp_path, _oof(reported), replace(outputs, weights=joint),
                                  reported.parent.parent / "data")
    per_class = re.search(r'<section id="per-class">(.*?)</section>', page, re.S).group(1)
    assert "<th>offset</th>" in per_class and "<td>+0.250</td></tr>" in per_class
    assert "<td>+0.000</td>" in per_class  # the other classes' zero offsets shown, not blank
    audit_part = re.search(r'<section id="audit">(.*?)</section>', page, re.S).group(1)
    assert "<th>p(wrong)</th>" in audit_part and "<td>0.910</td>" in audit_part and "<td>0.620</td>" in audit_part
    assert people[2] not in audit_part  # not a suspect
    assert "Showing 2: people the audit marks as suspects" in audit_part
    assert "audit.csv is older than this blend" in audit_part
    per_attribute = {**outputs.weights, "offsets": {"mask": [-0.5, 0.0, 0.2], "gender": [0.0, 0.0],
                                                    "age": [0.1, 0.0, 0.0]}}
    page = reporting.build_report(tmp_path, _oof(reported), replace(outputs, weights=per_attribute))
    weights_part = re.search(r'<section id="weights">(.*?)</section>', page, re.S).group(1)
    assert "mask: wear <b>-0.500</b>, incorrect <b>+0.000</b>, not_worn <b>+0.200</b>" in weights_part
    assert "age: &lt;30 <b>+0.100</b>" in weights_part and "gender:" not in weights_part  # all zero: left out
    assert "<th>offset</th>" not in page


def test_without_suspects_the_page_says_why_and_shows_the_people_worth_a_look(reported, tmp_path):
    _copy_blend(reported, tmp_path)
    people = pd.read_parquet(reported / "blend" / "oof_predictions.parquet").person.unique()
    gender, mask = people[:14], people[20:23]
    rows = ([{"person": p, "attribute": "gender", "rank": i + 1, "score": 0.1 + 0.01 * i, "p_wrong": 0.2 - 0.01 * i,
              "given": "male", "suggested": "female", "suspect": False, "tier": "review" if i < 12 else ""}
             for i, p in enumerate(gender)]
            + [{"person": p, "attribute": "mask", "rank": i + 1, "score": 0.3, "p_wrong": 0.09 - 0.04 * i,
                "given": "as named", "suggested": "incorrect_mask and normal swapped", "suspect": False,
                "tier": "review" if i < 2 else ""} for i, p in enumerate(mask)])
    pd.DataFrame(rows).to_csv(tmp_path / "audit.csv", index=False)
    page = reporting.build_report(tmp_path, _oof(reported), reporting.read_blend_outputs(tmp_path),
                                  reported.parent.parent / "data")
    part = re.search(r'<section id="audit">(.*?)</section>', page, re.S).group(1)
    assert "Nothing to show" not in part
    assert (f"<b>No suspects</b>: no one's p(wrong) passes the cut; the highest is 0.200 (gender, {gender[0]}; "
            "mask 0.090), so the models at this size are not sure enough that any label is wrong") in part
    shown = list(gender[:8]) + list(mask[:2])  # the page's 8 per attribute, gender first
    expected = sum(r["p_wrong"] for r in rows if r["person"] in shown)
    assert f"<h3>Worth a look</h3><p>Showing 10 of 14, the top of each ranking: about " \
           f"{expected:.1f} wrong labels expected" in part
    cells = re.findall(r'<tr><td class="text">([^<]+)</td>(.*?)</tr>', part.split("<tbody>")[1], re.S)
    assert [c[0] for c in cells] == shown
    assert all(len(re.findall(r'src="data:image/jpeg;base64,', c[1])) == len(MASK_STEMS) for c in cells)
    assert "<td>0.200</td>" in part and "<h3>Suspects</h3>" not in part


def test_fold_table_comes_from_the_oof_logits_without_a_run_leaderboard(reported):
    oof = _oof(reported)
    table = reporting.fold_table(oof, reported / "no_such_leaderboard.csv")
    for m, model in enumerate(oof.models):
        for k in range(N_SPLITS):
            rows = oof.fold == k
            expected = f1_score(oof.target[rows], oof.logits[m, rows].argmax(1), average="macro")
            assert table.loc[model, f"fold {k}"] == pytest.approx(expected)
        pooled = f1_score(oof.target, oof.logits[m].argmax(1), average="macro")
        assert table.loc[model, "OOF pooled"] == pytest.approx(pooled)
    assert table.loc["blind", "OOF pooled"] < 0.2 < table.loc["wide", "OOF pooled"]


def test_fold_table_prefers_the_run_leaderboard(reported, tmp_path):
    rows = [{"model": m, "backbone": "resnet18", "fold": str(k), "macro_f1": 0.1 * i + 0.01 * k}
            for i, m in enumerate(MODELS) for k in range(N_SPLITS)]
    rows += [{"model": m, "backbone": "resnet18", "fold": "mean", "macro_f1": 9.0} for m in MODELS]
    path = tmp_path / "leaderboard.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = reporting.fold_table(_oof(reported), path)
    assert table.loc["narrow", "fold 2"] == pytest.approx(0.12)
    assert table.loc["narrow", "fold mean"] == pytest.approx(0.11)  # the "mean" rows are not folds
    assert list(table.columns[:N_SPLITS]) == [f"fold {k}" for k in range(N_SPLITS)]


def test_error_correlation_sees_twins_and_strangers():
    y = make_targets(3000, 8)
    a, b = model_logits(y, 1, (1.5, 1.5, 0.8)), model_logits(y, 2, (1.5, 1.5, 0.8))
    oof = OofLogits(("a", "a_again", "b"), np.stack([a, a, b]), np.arange(3000).astype(str),
                    np.arange(3000).astype(str), np.zeros(3000, int), y, "h", ())
    corr = reporting.error_correlation(oof)
    assert corr.loc["a", "a_again"] == pytest.approx(1.0)
    assert abs(corr.loc["a", "b"]) < 0.1


def test_report_cli_needs_a_blend_first(reported, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("spec.yaml", "oof.parquet"):
        (bare / name).write_bytes((reported / name).read_bytes())
    assert report.main(["--results", str(bare)]) == 2
    assert "run python -m orchestrator.blend first" in capsys.readouterr().err
    assert not (bare / "report.html").exists()


BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# Run inside a copy of the page once it has loaded: where the summary, the chosen method's name
# and the methods table lie in a 1400-wide window, written into the DOM for --dump-dom to show.
PROBE = """<script>
window.addEventListener("load", () => {
  const box = e => { if (!e) return null; const r = e.getBoundingClientRect();
                     return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; };
  const heads = document.querySelectorAll("#methods thead tr:last-child th");
  const chosenRow = document.querySelector("#methods tr.chosen");
  const otherRow = document.querySelector("#methods tbody tr:not(.chosen)");
  const seen = {width: innerWidth, height: innerHeight, scrollWidth: document.documentElement.scrollWidth,
    summary: box(document.getElementById("summary")), chosen: box(document.getElementById("chosen-method")),
    chosenText: document.getElementById("chosen-method").textContent, chosenRow: box(chosenRow),
    lastHead: box(heads[heads.length - 1]), chosenBackground: getComputedStyle(chosenRow).backgroundColor,
    otherBackground: otherRow ? getComputedStyle(otherRow).backgroundColor : null};
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
});
</script>"""


def _browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def test_summary_and_chosen_method_are_on_the_first_screen_in_chromium(request, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip(f"no headless Chromium on PATH (looked for {', '.join(BROWSERS)}); the first-screen layout "
                    "check needs one, e.g. apt-get install chromium")
    reported = request.getfixturevalue("reported")  # only now: a skip should not build the experiment
    probe = tmp_path / "probe.html"
    probe.write_text(_page(reported).replace("</body>", PROBE + "</body>"))
    done = subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1400,900", "--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000",
         "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=60)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no layout probe in Chromium's DOM (exit {done.returncode}): {done.stderr[-1500:]}"
    seen = json.loads(html.unescape(found.group(1)))
    width, height = seen["width"], seen["height"]
    assert width == 1400 and 600 < height <= 900  # the window's viewport, less any browser chrome
    assert seen["chosenText"] == _weights(reported)["method"]
    for name in ("summary", "chosen"):  # wholly inside the first screen
        box = seen[name]
        assert 0 <= box["top"] and box["bottom"] <= height and 0 <= box["left"] and box["right"] <= width, name
    assert seen["scrollWidth"] <= width  # nothing on the page needs a horizontal scroll
    assert seen["chosenRow"]["right"] <= width and seen["lastHead"]["right"] <= width
    assert seen["chosenBackground"] != seen["otherBackground"]  # the chosen row is highlighted


def test_dates_say_when_the_jobs_trained_not_when_a_cached_rerun_prepared():
    from datetime import UTC, datetime

    from orchestrator.analysis.reporting.inputs import Jobs
    from orchestrator.analysis.reporting.summary import run_rows

    trained = datetime(2026, 11, 3, 9, 0, tzinfo=UTC).timestamp()
    jobs = Jobs(pd.DataFrame({"job": ["a", "b"], "seconds": [600.0, 60.0],
                              "finished": [trained + 600, trained + 3600]}), pd.DataFrame())
    rerun = {"created": "2026-11-05T10:00:00+00:00"}  # prepared again two days later, nothing retrained
    dates = dict((name, value) for name, value, _ in run_rows(rerun, {}, jobs))["dates"]
    assert dates.startswith("jobs trained 2026-11-03 09:00 UTC to 2026-11-03 10:00 UTC · prepared 2026-11-05 10:00")
    none = Jobs(pd.DataFrame(columns=["job", "seconds", "finished"]), pd.DataFrame())
    assert dict((n, v) for n, v, _ in run_rows(rerun, {}, none))["dates"].startswith("jobs trained: unknown")
