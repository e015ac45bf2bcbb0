"""The report: one offline page (`page`) made of its sections: the summary, the
methods table and glossary (`html`), figures, the audit's suspects and people worth a look
(`label_audit`, read by `inputs`),
face crops (`crops`), face focus (`focus`), a second round (`second_round`),
and a pooled blend's experiments (`sources`).
"""
from tasks.exports import lazy_exports

ENTRY_POINTS = {
    'write_report': 'page',
    'build_report': 'page',
}
__all__ = sorted(ENTRY_POINTS)
__getattr__ = lazy_exports(__name__, ENTRY_POINTS)
