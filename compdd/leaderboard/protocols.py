"""Protocol ids for numbers quoted from papers, kept apart from the protocols compdd runs.

A published number was not produced by a compdd protocol: the public MTT/FTD/DATM/EDF evaluation
reports the best test accuracy over training (model selection on the test set), SRe2L/RDED add a
teacher, and the code differs from ours. Filing such a number under ``dd-v1`` would let it be ranked
against final-epoch results as if they were comparable, so each paper protocol gets its own id that
says what it is. These ids are only valid for ``source: reported`` records.
"""

from __future__ import annotations

from compdd.evaluation.protocols import PROTOCOLS

REPORTED_PROTOCOLS: dict[str, str] = {
    "paper-dd": (
        "Numbers quoted from the EDF paper, Table 1, 'DD' group: ConvNetD5 at 128 px trained on the distilled "
        "set by the public MTT/FTD/DATM/EDF evaluation code (1000 epochs, learned lr, DSA), which reports the best "
        "test accuracy seen during training; the paper does not say how many runs the ± covers."
    ),
    "paper-kd": (
        "Numbers quoted from the EDF paper, Table 1, 'Eval. w/ Knowledge Distillation' group: the student is "
        "trained on the distilled images with a teacher's soft predictions (SRe2L/RDED evaluation code)."
    ),
    "paper-nokd": (
        "Numbers quoted from the EDF paper, Table 10: SRe2L, RDED and EDF evaluated with their soft labels and "
        "cross-entropy only, without knowledge distillation from a teacher."
    ),
}


def protocol_description(protocol: str) -> str:
    """One paragraph saying what a protocol id means (a runnable compdd protocol or a paper protocol)."""
    if protocol in REPORTED_PROTOCOLS:
        return REPORTED_PROTOCOLS[protocol]
    if protocol in PROTOCOLS:
        return " ".join(PROTOCOLS.get(protocol).description.split())
    return f"Unknown protocol {protocol!r} (not defined by this compdd)."
