"""`python -m orchestrator.audit`: people whose given labels the OOF predictions contradict.

Per attribute, a person's evidence for a label is aggregated over their images (a product
of experts); gender and age bands use all seven images, the mask check asks whether the
incorrect_mask and normal files look swapped. Each person gets p_wrong, the probability
that the given label is wrong (images calibrated, a person's correlated photos counted as
the independent ones they are worth, a prior rate of label errors), and is a suspect when
p_wrong passes the cut. The next few people of each ranking are "worth a look" (photos to
check, never relabelled). audit.csv ranks everyone, with a tier column; audit_relabel.csv
holds the suspects alone in the relabel-file format, to review and then feed back as
data.relabel.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.cli import add_results_args, count_arg, fraction_arg, make_parser, run_main


def run(args: argparse.Namespace) -> None:
    from orchestrator.analysis.mislabels.console import attribute_report, truth_table
    from orchestrator.analysis.mislabels.contradictions import (
        AGGREGATES,
        ATTRIBUTES,
        audit_table,
        hypotheses,
        image_probs,
        precision_recall,
        precision_recall_at_cut,
        rank,
        read_true_mislabels,
        relabel_table,
    )
    from orchestrator.analysis.mislabels.suspects import assess, review_size
    from orchestrator.analysis.results import all_class_models, load_oof
    from orchestrator.analysis.results_folder import (
        PREFER_BLENDED,
        ResultsError,
        find_experiment,
        load_experiment,
    )
    from tasks.atomic import atomic_path
    from tasks.log import to_stdout

    exp_dir = find_experiment(args.results, prefer=PREFER_BLENDED, log=to_stdout)
    spec = load_experiment(exp_dir, args.overrides)
    oof = load_oof(exp_dir / "oof.parquet", spec.folds.n_splits, all_class_models(spec),
                   exp_dir / "folds.parquet", log=to_stdout)
    if not oof.models:
        raise ResultsError(f"{exp_dir}/oof.parquet: no model has complete OOF logits to audit with")
    h = hypotheses(oof, image_probs(oof, exp_dir / "blend" / "weights.json", log=to_stdout))
    assessed = {a: assess(h[a], args.error_rate, args.cut) for a in ATTRIBUTES}
    relabel = relabel_table(assessed, args.top)
    for name, table in (("audit.csv", audit_table(assessed)), ("audit_relabel.csv", relabel)):
        with atomic_path(exp_dir / name) as tmp:
            table.to_csv(tmp, index=False)
    truth = read_true_mislabels(args.truth_mislabels, h) if args.truth_mislabels else None
    for a in assessed.values():
        print(attribute_report(a, truth[a.attribute] if truth else None), flush=True)
    parts = [f"{a.attribute} temperature {a.calibration.temperature:.2f}, {a.calibration.images:.0f} images worth "
             f"{a.calibration.effective_images:.1f}" for a in assessed.values()]
    print(f"p_wrong: label-error rate {args.error_rate:g}, suspect at p_wrong > {args.cut:g}, worth a look: the next "
          f"{review_size(len(h['gender'].people), args.error_rate)} per attribute above p_wrong {args.error_rate:g}\n"
          f"calibration: " + "; ".join(parts), flush=True)
    suspects = len(relabel.drop_duplicates(["person", "attribute"]))
    what = (f"{suspects} suspects in relabel format: review it, then set data.relabel to it" if suspects else
            "no suspects, a header only: the people worth a look are above")
    print(f"wrote {exp_dir / 'audit.csv'} (everyone ranked per attribute, with p_wrong, suspect and tier)\n"
          f"wrote {exp_dir / 'audit_relabel.csv'} ({what})", flush=True)
    if truth is not None:
        rankings = {how: {a: rank(h[a], how) for a in ATTRIBUTES} for how in AGGREGATES}
        top_k = precision_recall(rankings, truth)
        fmt = lambda v: f"{v:.3f}"  # noqa: E731
        print(f"vs {args.truth_mislabels}, suspects at p_wrong > {args.cut:g} (review: worth a look):\n"
              + truth_table(precision_recall_at_cut(assessed, truth)), flush=True)
        if len(top_k):
            print("top k of each ranking, k = the true count and twice it:\n"
                  + top_k.to_string(index=False, float_format=fmt), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser("python -m orchestrator.audit", __doc__, [
        "python -m orchestrator.audit", "python -m orchestrator.audit --results results/five_fold --cut 0.8",
        "python -m orchestrator.audit --truth-mislabels data/synth/truth/mislabeled.csv"], [
        "results/<name>/audit.csv (everyone ranked per attribute: p_wrong, suspect, tier = suspect | review | '')",
        "results/<name>/audit_relabel.csv (the suspects, relabel format: review, then set data.relabel)"])
    add_results_args(parser)
    parser.add_argument("--error-rate", type=fraction_arg, default=0.01,
                        help="prior share of wrong labels per attribute (default 0.01)")
    parser.add_argument("--cut", type=fraction_arg, default=0.5,
                        help="a suspect has p_wrong above this (default 0.5: more likely wrong than right)")
    parser.add_argument("--top", type=count_arg, help="at most this many suspects per attribute in audit_relabel.csv")
    parser.add_argument("--truth-mislabels", type=Path,
                        help="relabel-format CSV of the true mislabels: report precision and recall of the "
                             "suspects and of the top k")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
