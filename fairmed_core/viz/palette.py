"""The colour-blind-safe palette (Okabe & Ito, 2008) used by every FairMed figure."""

from __future__ import annotations

OKABE_ITO = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow (last: low contrast on white)
    "#000000",
)
NEUTRAL_GREY = "#999999"  # the unknown group and reference lines
BAND_FILL = "rgba(0, 158, 115, 0.12)"  # the acceptable-disparity band


FIXED_COLOURS = {
    # groups of the data contract: the same group has the same colour in every chart
    "F": OKABE_ITO[3], "M": OKABE_ITO[0],
    "A1": OKABE_ITO[4], "A2": OKABE_ITO[2], "A3": OKABE_ITO[1], "A4": OKABE_ITO[5],
    "light": OKABE_ITO[1], "medium": OKABE_ITO[5], "dark": OKABE_ITO[0],
    "UNK": NEUTRAL_GREY,
    # sources of the embedded benchmark
    "synth_cxr": OKABE_ITO[0], "synth_derm": OKABE_ITO[1], "synth_mammo": OKABE_ITO[2],
    # training methods
    "grpo": OKABE_ITO[0], "fairgrpo": OKABE_ITO[5], "fairgrpo_nd": OKABE_ITO[3], "grpo_dro": OKABE_ITO[1],
    "grpo_resample": OKABE_ITO[2], "rloo": OKABE_ITO[4], "reinforce_pp": OKABE_ITO[7], "sft": NEUTRAL_GREY,
    "erm": OKABE_ITO[0], "penalty": OKABE_ITO[1], "fairgrad": OKABE_ITO[2],
}  # fmt: skip
"""One colour per group, source and method wherever it is drawn (a reader learns it once)."""


def colour_for(index: int, name: object = None) -> str:
    """The fixed colour of ``name`` when it has one (:data:`FIXED_COLOURS`), else the ``index``-th palette
    colour, cycling."""
    fixed = FIXED_COLOURS.get(str(name)) if name is not None else None
    return fixed or OKABE_ITO[index % len(OKABE_ITO)]
