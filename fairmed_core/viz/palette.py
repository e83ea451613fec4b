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


def colour_for(index: int) -> str:
    """The palette colour for the ``index``-th series, cycling."""
    return OKABE_ITO[index % len(OKABE_ITO)]
