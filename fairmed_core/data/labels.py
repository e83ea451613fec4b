"""Words for what the data contract stores as codes: group names, source names, the finding of each source, and a
readable label for a case, so that every page and document says "age 26-50" and "case 5, chest X-ray" rather
than "A2" and "synth_cxr-0000000005".
"""

from __future__ import annotations

import re

from fairmed_core.data.schema import UNKNOWN

__all__ = ["GROUP_NAMES", "SOURCE_FINDINGS", "SOURCE_NAMES", "answer_label", "attribute_label", "case_label",
           "finding_name", "group_label", "source_label"]

# The age boundaries are the data contract's (schema.age_group): A1 <= 25 < A2 <= 50 < A3 <= 75 < A4.
GROUP_NAMES = {
    "M": "male", "F": "female",
    "A1": "age 25 or under", "A2": "age 26-50", "A3": "age 51-75", "A4": "age over 75",
    "light": "light skin", "medium": "medium skin", "dark": "dark skin",
    UNKNOWN: "not recorded",
}
ATTRIBUTE_NAMES = {"sex": "sex", "age_group": "age group", "skin_tone": "skin tone"}
SOURCE_NAMES = {"synth_cxr": "chest X-ray", "synth_derm": "dermoscopy", "synth_mammo": "mammography"}
# What "yes" means on each source of the embedded benchmark (fairmed_core.data.synth).
SOURCE_FINDINGS = {"synth_cxr": "opacity", "synth_derm": "suspicious lesion", "synth_mammo": "mass"}


def group_label(value: object) -> str:
    """A group key in words ("A2" -> "age 26-50", "UNK" -> "not recorded", an intersection "F,A3" -> "female,
    age 51-75"); an unknown key is returned as is."""
    text = str(value)
    if text in GROUP_NAMES:
        return GROUP_NAMES[text]
    return ", ".join(GROUP_NAMES.get(part, part) for part in text.split(","))


def attribute_label(attribute: object) -> str:
    """An attribute column in words ("age_group" -> "age group")."""
    text = str(attribute)
    return ATTRIBUTE_NAMES.get(text, text.replace("_", " "))


def source_label(source: object) -> str:
    """A data source in words ("synth_cxr" -> "chest X-ray"); another source is returned as is."""
    text = str(source)
    return SOURCE_NAMES.get(text, text)


def finding_name(source: object) -> str | None:
    """The finding a "yes" means on this source ("opacity" on chest X-ray), or None where it is not known."""
    return SOURCE_FINDINGS.get(str(source))


def answer_label(answer: object, source: object) -> str:
    """A yes/no answer with the source's finding named: "yes (opacity)", "no (no mass)"; other answers as is."""
    text = str(answer)
    finding = finding_name(source)
    if finding is None or text not in ("yes", "no"):
        return text
    return f"{text} ({finding})" if text == "yes" else f"{text} (no {finding})"


def case_label(case_id: object, source: object | None = None) -> str:
    """A case as a reader names it: "case 5, chest X-ray" for ``synth_cxr-0000000005`` (or ``0000000005``); an id
    that is not a number, with or without its source as prefix, is kept whole ("case CXR-A17, ...")."""
    text = str(case_id)
    source_text = None if source is None else str(source)
    number = text
    if source_text and text.startswith(source_text):
        number = text[len(source_text):].lstrip("-_ ")
    if re.fullmatch(r"\d+", number):
        number = str(int(number))
    elif number != text or not number:
        number = text
    return f"case {number}" + (f", {source_label(source_text)}" if source_text else "")
