"""A seeded corpus of malformed inputs and an in-process harness that runs each one in a forked child.

Every case is one input a reviewer could be sent: a predictions table (CSV, TSV, Parquet) for ``fairmed audit``,
a JSONL manifest for ``fairmed card``, a manifest whose image is PNG, JPEG or DICOM (checked by
``Dataset.check_images`` from its header, then read through ``Dataset.load_image``), the bytes of an upload
(``read_uploaded_image``), or a model folder whose safetensors header, shard index or config is damaged
(``check_model_directory``). Each case says what must happen: ``ok`` (a correct result, checked against what
the generator knows: row counts, case counts, parameter counts, image sizes), ``error`` (a clean refusal) or
``either``. A clean refusal is a ``FairMedInputError`` (for the CLI: exit code 2 and exactly one line on
stderr). Anything else is a failure: a traceback, a hang past the timeout, or memory past the address-space cap
(``resource.setrlimit(RLIMIT_AS)`` in the child, on top of what the parent already maps).

    python benchmarks/fuzz_inputs.py                   # the full corpus, counts printed
    python benchmarks/fuzz_inputs.py --subset 400      # the seeded subset the test suite runs
    python benchmarks/fuzz_inputs.py --write-docs      # also put the counts into docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import select
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTION = "## Fuzzed inputs: clean errors or correct results"
# Failures that are known and belong to code outside the input readers (the CLI's flags, the audit's settings):
# reported with every run, never counted as passing, and the only failures the test suite lets through.
KNOWN_OPEN = {
    "audit/structure/seed-negative": "fairmed audit --seed -5: numpy's ValueError escapes the CLI (a traceback); "
                                     "the seed is checked by neither the CLI's flag type nor the audit's settings",
}
TARGETS = ("audit", "card", "manifest_images", "upload", "model_dir")
OUTSIDE = "../outside/"  # a file path starting with this is written beside the case's folder, not inside it


@dataclass(frozen=True)
class FuzzCase:
    """One malformed (or valid) input and what must happen to it."""

    case_id: str  # "<target>/<family>/<n>"
    target: str  # one of TARGETS
    files: tuple[tuple[str, bytes], ...]  # relative path -> content (OUTSIDE prefix: outside the input folder)
    main: str  # the input: the file (or folder, "." for model_dir) the target is given
    expect: str  # "ok", "error" or "either"
    check: dict = field(default_factory=dict)  # what a correct result must show (rows, cases, parameters, size)
    links: tuple[tuple[str, str], ...] = ()  # (link inside the folder, target relative to the case folder)
    args: tuple[str, ...] = ()  # extra CLI arguments
    heavy: bool = False  # left out of the fast subset
    timeout_s: float | None = None  # a longer limit for a case known to be slow (not hung)

    @property
    def family(self) -> str:
        return self.case_id.rsplit("/", 1)[0]


@dataclass(frozen=True)
class Outcome:
    """What one case did: ``kind`` is "ok", "clean_error" or a failure ("traceback", "hang", "memory",
    "wrong_result", "refused_valid", "accepted_garbage", "crash")."""

    case_id: str
    kind: str
    detail: str
    seconds: float
    peak_rss_growth_mb: float

    @property
    def failed(self) -> bool:
        return self.kind not in ("ok", "clean_error")


# ----------------------------------------------------------------------------------------------- predictions


_PRED_HEADER = ("label", "pred", "score", "sex", "age_group", "site")
_AUDIT_ARGS = ("--label-col", "label", "--pred-col", "pred", "--sensitive", "sex", "--sensitive", "age_group",
               "--n-boot", "20")


def _prediction_rows(rng: np.random.Generator, n: int, *, labels=("0", "1"), groups=("F", "M")) -> list[list[str]]:
    rows = []
    for _ in range(n):
        label = labels[int(rng.integers(len(labels)))]
        pred = label if rng.random() < 0.7 else labels[int(rng.integers(len(labels)))]
        rows.append([label, pred, f"{rng.random():.3f}", groups[int(rng.integers(len(groups)))],
                     ("A1", "A2", "A3")[int(rng.integers(3))], ("north", "south")[int(rng.integers(2))]])
    return rows


def _csv_text(rows: list[list[str]], header=_PRED_HEADER, sep: str = ",", newline: str = "\n") -> str:
    return newline.join([sep.join(header), *(sep.join(row) for row in rows)]) + newline


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _audit_case(case_id: str, name: str, data: bytes, expect: str, rows: int | None = None,
                args: tuple[str, ...] = (), heavy: bool = False, timeout_s: float | None = None) -> FuzzCase:
    check = {"rows": rows} if rows is not None else {}
    return FuzzCase(case_id, "audit", ((name, data),), name, expect, check, args=args, heavy=heavy,
                    timeout_s=timeout_s)


def _valid_audit_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    family = "audit/valid"
    n = int(rng.integers(30, 120))
    rows = _prediction_rows(rng, n)
    yield _audit_case(f"{family}/plain-{index}", "p.csv", _csv_text(rows).encode(), "ok", n)
    yield _audit_case(f"{family}/crlf-bom-{index}", "p.csv", ("\ufeff" + _csv_text(rows, newline="\r\n")).encode(),
                      "ok", n)
    yield _audit_case(f"{family}/tsv-{index}", "p.tsv", _csv_text(rows, sep="\t").encode(), "ok", n)
    odd = [[*row[:3], _quote(("F, left", "M \"x\"", "é女", "=HYPERLINK(1)", "@x", "-1")[i % 6]), *row[4:]]
           for i, row in enumerate(rows)]
    yield _audit_case(f"{family}/odd-group-names-{index}", "p.csv", _csv_text(odd).encode(), "ok", n)
    latin = [[*row[:3], ("Fémme", "Mâle")[i % 2], *row[4:]] for i, row in enumerate(rows)]
    yield _audit_case(f"{family}/latin-1-{index}", "p.csv", _csv_text(latin).encode("latin-1"), "ok", n)
    yes_no = _prediction_rows(rng, n, labels=("yes", "no"))
    yield _audit_case(f"{family}/yes-no-{index}", "p.csv", _csv_text(yes_no).encode(), "ok", n)
    booleans = _prediction_rows(rng, n, labels=("True", "False"))
    yield _audit_case(f"{family}/true-false-{index}", "p.csv", _csv_text(booleans).encode(), "ok", n)
    three = _prediction_rows(rng, n, labels=("flu", "cold", "covid"))
    yield _audit_case(f"{family}/three-class-{index}", "p.csv", _csv_text(three).encode(), "ok", n)
    missing = [[*row[:3], "" if i % 5 == 0 else row[3], *row[4:]] for i, row in enumerate(rows)]
    yield _audit_case(f"{family}/missing-attribute-{index}", "p.csv", _csv_text(missing).encode(), "ok", n)
    yield _audit_case(f"{family}/blank-lines-{index}", "p.csv", (_csv_text(rows) + "\n\n\n").encode(), "ok", n)
    yield _audit_case(f"{family}/with-score-and-source-{index}", "p.csv", _csv_text(rows).encode(), "ok", n,
                      args=("--score-col", "score", "--source-col", "site"))
    declared = [list(row) for row in rows]
    declared[n // 2][0] = "2"
    yield _audit_case(f"{family}/declared-third-class-{index}", "p.csv", _csv_text(declared).encode(), "ok", n,
                      args=("--label-values", "0", "1", "2"))


_STRAY_VALUES = ("0.5", "2", "-1", "maybe", "2024-01-01", "inf", "-inf", "1e30", str(2**63), "1e400", "1 000",
                 "yes", "\u0663", "0x1", "１")


def _stray_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    n = int(rng.integers(40, 120))
    rows = _prediction_rows(rng, n)
    for value in _STRAY_VALUES:
        for column in (0, 1):
            changed = [list(row) for row in rows]
            changed[int(rng.integers(n))][column] = value
            name = f"audit/stray-{'label' if column == 0 else 'pred'}/{value.encode().hex()[:16]}-{index}"
            yield _audit_case(name, "p.csv", _csv_text(changed).encode(), "error")


def _structural_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    family = "audit/structure"
    n = int(rng.integers(30, 80))
    rows = _prediction_rows(rng, n)
    text = _csv_text(rows)
    lines = text.splitlines()
    at = int(rng.integers(2, len(lines)))
    short = lines[:at] + [",".join(lines[at].split(",")[:-1])] + lines[at + 1:]
    yield _audit_case(f"{family}/short-row-{index}", "p.csv", ("\n".join(short) + "\n").encode(), "error")
    extra = lines[:at] + [lines[at] + ",x"] + lines[at + 1:]
    yield _audit_case(f"{family}/extra-field-{index}", "p.csv", ("\n".join(extra) + "\n").encode(), "error")
    first = [lines[0], lines[1] + ",x", *lines[2:]]
    yield _audit_case(f"{family}/extra-field-first-row-{index}", "p.csv", ("\n".join(first) + "\n").encode(),
                      "error")
    dup = _csv_text(rows, header=("label", "pred", "score", "sex", "age_group", "label"))
    yield _audit_case(f"{family}/duplicate-header-{index}", "p.csv", dup.encode(), "error")
    no_label = _csv_text(rows, header=("truth", "pred", "score", "sex", "age_group", "site"))
    yield _audit_case(f"{family}/missing-column-{index}", "p.csv", no_label.encode(), "error")
    yield _audit_case(f"{family}/empty-{index}", "p.csv", b"", "error")
    yield _audit_case(f"{family}/header-only-{index}", "p.csv", (lines[0] + "\n").encode(), "error")
    yield _audit_case(f"{family}/bom-only-{index}", "p.csv", "\ufeff".encode(), "error")
    yield _audit_case(f"{family}/unterminated-quote-{index}", "p.csv",
                      (text + '1,0,0.5,"F,A1,north\n' + text.split("\n", 1)[1]).encode(), "error")
    yield _audit_case(f"{family}/nul-bytes-{index}", "p.csv", text.encode().replace(b"north", b"no\x00rth"), "error")
    bad_score = [list(row) for row in rows]
    bad_score[int(rng.integers(n))][2] = ("1.7", "-0.1", "high", "nan", "inf")[index % 5]
    yield _audit_case(f"{family}/bad-score-{index}", "p.csv", _csv_text(bad_score).encode(), "error",
                      args=("--score-col", "score"))
    missing = [list(row) for row in rows]
    missing[int(rng.integers(n))][0] = ""
    yield _audit_case(f"{family}/missing-label-{index}", "p.csv", _csv_text(missing).encode(), "error")
    yield _audit_case(f"{family}/huge-cell-{index}", "p.csv",
                      (text + "1,0,0.5," + "F" * 300_000 + ",A1,north\n").encode(), "either")
    yield _audit_case(f"{family}/utf16-{index}", "p.csv", text.encode("utf-16"), "error")
    yield _audit_case(f"{family}/seed-negative-{index}", "p.csv", text.encode(), "error", args=("--seed", "-5"))


def _junk_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    family = "audit/not-a-table"
    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, "PNG")
    blobs = {
        "png": png.getvalue(),
        "gzip": b"\x1f\x8b\x08\x00" + bytes(rng.integers(0, 256, 64, np.uint8)),
        "zip": b"PK\x03\x04" + bytes(rng.integers(0, 256, 200, np.uint8)),
        "pdf": b"%PDF-1.7\n" + bytes(rng.integers(0, 256, 200, np.uint8)),
        "random": bytes(rng.integers(0, 256, int(rng.integers(1, 4000)), np.uint8)),
        "parquet-suffix-text": b"label,pred\n1,0\n",
    }
    for kind, data in blobs.items():
        name = "p.parquet" if kind == "parquet-suffix-text" else "p.csv"
        yield _audit_case(f"{family}/{kind}-{index}", name, data, "error" if kind != "random" else "either")


def _mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random damage to ``data``: flipped bytes, a cut, a deleted or repeated span, inserted quotes."""
    kind = ("flip", "truncate", "delete", "repeat", "insert")[int(rng.integers(5))]
    buffer = bytearray(data)
    if kind == "flip":
        for _ in range(int(rng.integers(1, 8))):
            buffer[int(rng.integers(len(buffer)))] = int(rng.integers(256))
    elif kind == "truncate":
        buffer = buffer[: int(rng.integers(1, len(buffer)))]
    elif kind == "delete":
        start = int(rng.integers(len(buffer)))
        del buffer[start: start + int(rng.integers(1, 64))]
    elif kind == "repeat":
        start = int(rng.integers(len(buffer)))
        span = buffer[start: start + int(rng.integers(1, 200))]
        buffer[start:start] = span
    else:
        at = int(rng.integers(len(buffer)))
        buffer[at:at] = (b'"', b",", b"\n", b"\r", b"\x00", b"\xff\xfe", b'\\"')[int(rng.integers(7))]
    return kind, bytes(buffer)


def _mutated_audit_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    n = int(rng.integers(30, 80))
    text = _csv_text(_prediction_rows(rng, n)).encode()
    kind, data = _mutate(text, rng)
    yield _audit_case(f"audit/mutated/{kind}-{index}", "p.csv", data, "either")


def _parquet_bytes(frame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _parquet_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    import pandas as pd

    family = "audit/parquet"
    n = int(rng.integers(30, 100))
    frame = pd.DataFrame(_prediction_rows(rng, n), columns=list(_PRED_HEADER))
    frame["label"] = frame["label"].astype(int)
    frame["pred"] = frame["pred"].astype(int)
    frame["score"] = frame["score"].astype(float)
    yield _audit_case(f"{family}/valid-{index}", "p.parquet", _parquet_bytes(frame), "ok", n)
    categorical = frame.assign(sex=frame["sex"].astype("category"))
    yield _audit_case(f"{family}/categorical-{index}", "p.parquet", _parquet_bytes(categorical), "ok", n)
    listed = frame.assign(sex=[[value] for value in frame["sex"]])
    yield _audit_case(f"{family}/list-column-{index}", "p.parquet", _parquet_bytes(listed), "error")
    structs = frame.assign(age_group=[{"band": value} for value in frame["age_group"]])
    yield _audit_case(f"{family}/struct-column-{index}", "p.parquet", _parquet_bytes(structs), "error")
    stray = frame.copy()
    stray.loc[int(rng.integers(n)), "label"] = 2
    yield _audit_case(f"{family}/stray-label-{index}", "p.parquet", _parquet_bytes(stray), "error")
    infinite = frame.assign(label=frame["label"].astype(float))
    infinite.loc[int(rng.integers(n)), "label"] = float("inf")
    yield _audit_case(f"{family}/infinite-label-{index}", "p.parquet", _parquet_bytes(infinite), "error")
    data = _parquet_bytes(frame)
    yield _audit_case(f"{family}/truncated-{index}", "p.parquet", data[: int(rng.integers(4, len(data) - 1))],
                      "error")
    kind, damaged = _mutate(data, rng)
    yield _audit_case(f"{family}/mutated-{kind}-{index}", "p.parquet", damaged, "either")


def _many_group_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    for groups in (20, 60, 150, 200, 201, 400):
        n = groups * 4
        rows = _prediction_rows(rng, n, groups=tuple(f"g{i:03d}" for i in range(groups)))
        rows[:groups] = [[*row[:3], f"g{i:03d}", *row[4:]] for i, row in enumerate(rows[:groups])]  # all occur
        # Up to 200 groups an attribute is audited (the gap tables grow with the square of the count, so 200
        # groups take minutes on a loaded core: slow, bounded, not hung); past that it is refused at once.
        slow = 60 < groups <= 200
        yield _audit_case(f"audit/many-groups/{groups}-{index}", "p.csv", _csv_text(rows).encode(),
                          "ok" if groups <= 200 else "error", n, heavy=slow, timeout_s=300.0 if slow else None)


# --------------------------------------------------------------------------------------------------- manifests


def _png_bytes(size=(8, 8), mode="L") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, "PNG")
    return buffer.getvalue()


def _manifest_line(image, **fields) -> str:
    record = {"problem": "<image> Is there a finding?", "images": [image] if isinstance(image, str) else image,
              "answer": "yes", "demo": "sex: Female, age: 68", "dataset": "site_a", **fields}
    return json.dumps(record)


def _card_case(case_id: str, manifest: str | bytes, expect: str, *, images=("img/a.png",), cases=None,
               links=(), extra_files=()) -> FuzzCase:
    data = manifest.encode() if isinstance(manifest, str) else manifest
    files = (("manifest.jsonl", data), *((path, _png_bytes()) for path in images), *extra_files)
    return FuzzCase(case_id, "card", files, "manifest.jsonl", expect, {"cases": cases} if cases else {},
                    links=tuple(links))


def _valid_card_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    family = "card/valid"
    n = int(rng.integers(3, 10))
    images = tuple(f"img/{i}.png" for i in range(n))
    lines = [_manifest_line(image, answer=("yes", "no")[i % 2]) for i, image in enumerate(images)]
    yield _card_case(f"{family}/plain-{index}", "\n".join(lines) + "\n", "ok", images=images, cases=n)
    yield _card_case(f"{family}/bom-blank-lines-{index}", "\ufeff" + "\n\n".join(lines) + "\n\n", "ok",
                     images=images, cases=n)
    strings = [line.replace(f'["{image}"]', f'"{image}"') for line, image in zip(lines, images)]
    yield _card_case(f"{family}/image-as-string-{index}", "\n".join(strings) + "\n", "ok", images=images, cases=n)
    unicode_demo = [_manifest_line(image, demo="sex: Fémme, âge: 68, skin tone: 暗") for image in images]
    yield _card_case(f"{family}/unicode-demo-{index}", "\n".join(unicode_demo) + "\n", "ok", images=images,
                     cases=n)
    inner_link = [_manifest_line("link.png")]
    yield _card_case(f"{family}/link-inside-{index}", "\n".join(inner_link) + "\n", "ok", images=("img/a.png",),
                     cases=1, links=(("link.png", "root/img/a.png"),))
    extras = [_manifest_line(image, extra={"nested": [1, {"a": None}]}, split="validation") for image in images]
    yield _card_case(f"{family}/extra-fields-{index}", "\n".join(extras) + "\n", "ok", images=images, cases=n)


def _bad_card_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    family = "card/bad"
    good = _manifest_line("img/a.png")
    secret = ((OUTSIDE + "secret.png", _png_bytes()),)
    yield _card_case(f"{family}/dotdot-{index}", _manifest_line("../outside/secret.png") + "\n", "error",
                     extra_files=secret)
    yield _card_case(f"{family}/absolute-{index}", _manifest_line("/etc/passwd") + "\n", "error")
    yield _card_case(f"{family}/link-outside-{index}", _manifest_line("link.png") + "\n", "error",
                     links=(("link.png", "outside/secret.png"),), extra_files=secret)
    yield _card_case(f"{family}/linked-folder-{index}", _manifest_line("dir/secret.png") + "\n", "error",
                     links=(("dir", "outside"),), extra_files=secret)
    yield _card_case(f"{family}/missing-image-{index}", _manifest_line("img/none.png") + "\n", "error")
    yield _card_case(f"{family}/nul-{index}", _manifest_line("img/a\u0000.png") + "\n", "error")
    yield _card_case(f"{family}/long-name-{index}", _manifest_line("img/" + "a" * 300 + ".png") + "\n", "error")
    yield _card_case(f"{family}/not-json-{index}", good + "\n{problem: x}\n", "error")
    yield _card_case(f"{family}/array-line-{index}", good + "\n[1, 2]\n", "error")
    yield _card_case(f"{family}/missing-answer-{index}", good + "\n" + good.replace('"answer"', '"answr"') + "\n",
                     "error")
    yield _card_case(f"{family}/empty-images-{index}", _manifest_line([]) + "\n", "error")
    yield _card_case(f"{family}/int-images-{index}", _manifest_line([1, 2]) + "\n", "error")
    yield _card_case(f"{family}/duplicate-ids-{index}", _manifest_line("img/a.png", id="x") + "\n"
                     + _manifest_line("img/a.png", id="x") + "\n", "error")
    yield _card_case(f"{family}/unknown-split-{index}", _manifest_line("img/a.png", split="holdout") + "\n",
                     "error")
    yield _card_case(f"{family}/utf16-{index}", (good + "\n").encode("utf-16"), "error")
    yield _card_case(f"{family}/latin1-{index}", _manifest_line("img/a.png", demo="sex: Fémme").replace(
        "\\u00e9", "é").encode("latin-1") + b"\n", "error")
    yield _card_case(f"{family}/nested-{index}", "[" * 100_000 + "]" * 100_000 + "\n", "error")
    yield _card_case(f"{family}/long-number-{index}", good[:-1] + ', "n": ' + "9" * 5000 + "}\n", "error")
    yield _card_case(f"{family}/empty-{index}", "", "error")
    yield _card_case(f"{family}/blank-{index}", "\n \n\t\n", "error")
    yield _card_case(f"{family}/huge-int-answer-{index}", _manifest_line("img/a.png", answer=2**80) + "\n", "ok",
                     cases=1)


def _mutated_card_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    n = int(rng.integers(2, 6))
    images = tuple(f"img/{i}.png" for i in range(n))
    text = ("\n".join(_manifest_line(image) for image in images) + "\n").encode()
    kind, data = _mutate(text, rng)
    yield _card_case(f"card/mutated/{kind}-{index}", data, "either", images=images)


# ------------------------------------------------------------------------------------------------------ images


def _zero_png(width: int, height: int) -> bytes:
    """A valid 8-bit grayscale PNG of zeros, streamed so the pixels never sit in memory."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = bytes(width + 1)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_bytes(size=(32, 24), mode="RGB") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, (90, 120, 30) if mode == "RGB" else 100).save(buffer, "JPEG")
    return buffer.getvalue()


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(_jpeg_bytes())
    at = data.index(b"\xff\xc0")
    data[at + 5: at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _dicom_bytes(pixels: np.ndarray | None, *, deflated: bool = False, **attributes) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        DigitalXRayImageStorageForPresentation,
        ExplicitVRLittleEndian,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if deflated else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN12345"
    ds.Modality = "DX"
    if pixels is not None:
        colour = pixels.ndim == 3 and pixels.shape[-1] == 3
        frames = pixels.shape[0] if pixels.ndim == 3 and not colour else 1
        rows, columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 3 if colour else 1
        if colour:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
        bits = pixels.dtype.itemsize * 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.PixelRepresentation = 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _deflate_bomb(pixel_bytes: int) -> bytes:
    """A deflated DICOM whose header claims 64x64 and whose PixelData holds ``pixel_bytes`` zeros."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    def split(data: bytes) -> tuple[bytes, bytes]:
        stream = io.BytesIO(data)
        read_preamble(stream, False)
        _read_file_meta_info(stream)
        return data[: stream.tell()], data[stream.tell():]

    _, dataset = split(_dicom_bytes(np.zeros((64, 64), np.uint16)))
    pixel_tag = struct.pack("<HH", 0x7FE0, 0x0010)
    dataset = dataset[: dataset.index(pixel_tag)]
    meta, _ = split(_dicom_bytes(np.zeros((64, 64), np.uint16), deflated=True))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(dataset + pixel_tag + b"OW\x00\x00" + struct.pack("<I", pixel_bytes))
    head += compressor.flush(zlib.Z_FULL_FLUSH)
    # A full flush resets the compressor's history, so one compressed megabyte of zeros can be repeated as is.
    megabyte = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return meta + head + megabyte * (pixel_bytes >> 20) + compressor.flush()


_BOMB_CACHE: dict[str, bytes] = {}


def _bomb(kind: str) -> bytes:
    if kind not in _BOMB_CACHE:
        _BOMB_CACHE[kind] = {
            "png-48mp": lambda: _zero_png(8000, 6000),
            "png-144mp": lambda: _zero_png(12000, 12000),
            "jpeg-65000": lambda: _jpeg_claiming(65000, 65000),
            "jpeg-9000": lambda: _jpeg_claiming(9000, 9000),
            "dicom-volume": lambda: _dicom_bytes(np.zeros((4, 4), np.uint16), Rows=6000, Columns=6000,
                                                 NumberOfFrames=55),
            "dicom-deflate-4gb": lambda: _deflate_bomb(4000 * 2**20),
        }[kind]()
    return _BOMB_CACHE[kind]


def _valid_images(rng: np.random.Generator) -> list[tuple[str, str, bytes, tuple[int, int]]]:
    """(kind, file name, bytes, (width, height)) of valid images in every mode the readers convert."""
    from PIL import Image

    width, height = int(rng.integers(8, 96)), int(rng.integers(8, 96))
    pixels = rng.integers(0, 255, (height, width), dtype=np.uint8)
    out = []
    for mode in ("L", "RGB", "RGBA", "LA", "P", "1", "I;16"):
        array = pixels if mode != "I;16" else pixels.astype(np.uint16) * 200
        image = Image.fromarray(array).convert(mode) if mode != "I;16" else Image.fromarray(array)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        out.append((f"png-{mode}", "x.png", buffer.getvalue(), (width, height)))
    for mode in ("L", "RGB", "CMYK"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buffer, "JPEG")
        out.append((f"jpeg-{mode}", "x.jpg", buffer.getvalue(), (width, height)))
    out.append(("dicom-16bit", "x.dcm", _dicom_bytes(pixels.astype(np.uint16) * 16), (width, height)))
    out.append(("dicom-8bit", "x.dcm", _dicom_bytes(pixels), (width, height)))
    out.append(("dicom-frames", "x.dcm", _dicom_bytes(np.stack([pixels] * 3).astype(np.uint16)), (width, height)))
    out.append(("dicom-rgb", "x.dcm", _dicom_bytes(np.stack([pixels] * 3, axis=-1)), (width, height)))
    out.append(("dicom-deflated", "x.dcm", _dicom_bytes(pixels.astype(np.uint16), deflated=True), (width, height)))
    out.append(("dicom-uid-name", "1.2.840.1", _dicom_bytes(pixels), (width, height)))
    return out


def _patched(pixels: np.ndarray, placeholder: bytes, replacement: bytes, **attributes) -> bytes:
    """A DICOM written with valid placeholder values, then byte-patched to hold values pydicom would not write."""
    data = _dicom_bytes(pixels, **attributes)
    assert len(placeholder) == len(replacement) and data.count(placeholder) == 1
    return data.replace(placeholder, replacement)


def _broken_dicoms(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    pixels = rng.integers(0, 4000, (32, 32), dtype=np.uint16)
    return [
        ("no-pixels", _dicom_bytes(None)),
        ("no-rows", _dicom_bytes(pixels, Rows=0)),
        ("bits-zero", _dicom_bytes(pixels, BitsAllocated=0)),
        ("samples-100", _dicom_bytes(pixels, SamplesPerPixel=100)),
        ("photometric-junk", _dicom_bytes(pixels, PhotometricInterpretation="HSV")),
        ("frames-text", _patched(pixels, b"7777", b"abc ", NumberOfFrames=7777)),
        ("frames-negative", _patched(pixels, b"7777", b"-4  ", NumberOfFrames=7777)),
        ("pixels-short", _dicom_bytes(pixels)[:-500]),
        ("transfer-syntax-unknown", _patched(pixels, b"1.2.840.10008.1.2.1\x00", b"1.2.3.4.5.6.7.8.9.1\x00")),
        ("window-junk", _patched(pixels, b"4242", b"abc ", WindowCenter=4242, WindowWidth=100)),
        ("rescale-junk", _patched(pixels, b"8888", b"1e99", RescaleSlope=8888, RescaleIntercept=0)),
        ("magic-only", bytes(128) + b"DICM"),
    ]


def _image_cases(rng: np.random.Generator, index: int) -> Iterator[tuple[str, str, bytes, str, dict]]:
    """(family, file name, bytes, expectation, check) for every image family; the same corpus feeds the upload
    reader and manifest images."""
    for kind, name, data, size in _valid_images(rng):
        yield f"valid-{kind}", name, data, "ok", {"size": list(size)}
    for kind, data in _broken_dicoms(rng):
        # Odd but readable window and rescale values may be decoded; the rest must be refused.
        yield f"dicom-broken-{kind}", "x.dcm", data, "either" if kind.endswith("-junk") else "error", {}
    valid = _valid_images(rng)
    for number in range(6):
        kind, name, data, _size = valid[int(rng.integers(len(valid)))]
        mutation, damaged = _mutate(data, rng)
        yield f"mutated-{kind}-{mutation}-{number}", name, damaged, "either", {}
    for prefix in (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", bytes(128) + b"DICM", b""):
        body = bytes(rng.integers(0, 256, int(rng.integers(1, 3000)), np.uint8))
        yield f"random-after-{(prefix[:4] or b'none').hex()}", "x.bin", prefix + body, "either", {}
    for kind, data in (("gif", b"GIF89a" + bytes(30)), ("pdf", b"%PDF-1.4\n"), ("text", b"hello"), ("empty", b"")):
        yield f"not-an-image-{kind}", "x.png", data, "error", {}


def _upload_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    for family, name, data, expect, check in _image_cases(rng, index):
        yield FuzzCase(f"upload/{family}/{index}", "upload", ((name, data),), name, expect, check)


def _manifest_image_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    for family, name, data, expect, check in _image_cases(rng, index):
        files = (("manifest.jsonl", (_manifest_line(f"img/{name}") + "\n").encode()), (f"img/{name}", data))
        yield FuzzCase(f"manifest_images/{family}/{index}", "manifest_images", files, "manifest.jsonl", expect,
                       check)


def _bomb_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    for kind in ("png-48mp", "png-144mp", "jpeg-65000", "jpeg-9000", "dicom-volume", "dicom-deflate-4gb"):
        name = "bomb.dcm" if kind.startswith("dicom") else ("bomb.png" if kind.startswith("png") else "bomb.jpg")
        data = _bomb(kind)
        yield FuzzCase(f"upload/bomb-{kind}/{index}", "upload", ((name, data),), name, "error")
        files = (("manifest.jsonl", (_manifest_line(f"img/{name}") + "\n").encode()), (f"img/{name}", data))
        yield FuzzCase(f"manifest_images/bomb-{kind}/{index}", "manifest_images", files, "manifest.jsonl", "error")


# ------------------------------------------------------------------------------------------------ model folders


_CONFIG = json.dumps({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]}).encode()
_PROCESSOR = (("processor_config.json", b"{}"), ("tokenizer.json", b"{}"))


def _safetensors(header: dict | bytes, data_bytes: int = 0, *, claimed: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if claimed is None else claimed) + raw + bytes(data_bytes)


def _model_case(case_id: str, files: tuple[tuple[str, bytes], ...], expect: str, parameters: int | None = None,
                *, config: bytes = _CONFIG, links=()) -> FuzzCase:
    check = {"parameters": parameters} if parameters is not None else {}
    return FuzzCase(case_id, "model_dir", (("config.json", config), *_PROCESSOR, *files), ".", expect, check,
                    links=tuple(links))


def _model_cases(rng: np.random.Generator, index: int) -> Iterator[FuzzCase]:
    family = "model_dir"
    rows, columns = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    header = {"w": {"dtype": "F32", "shape": [rows, columns], "data_offsets": [0, rows * columns * 4]},
              "__metadata__": {"format": "pt"}}
    valid = _safetensors(header, rows * columns * 4)
    yield _model_case(f"{family}/valid/{index}", (("model.safetensors", valid),), "ok", rows * columns)
    bad_headers = {
        "array": b"[1, 2]", "entry-not-object": b'{"w": 5}',
        "shape-text": b'{"w": {"shape": ["a"], "data_offsets": [0, 4]}}',
        "offsets-short": b'{"w": {"shape": [2], "data_offsets": [0]}}', "nested": b"[" * 50_000 + b"]" * 50_000,
        "negative": b'{"w": {"shape": [-3], "data_offsets": [0, 4]}}', "not-json": b"\xff\xfe{",
        "long-int": b'{"w": {"shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}',
        "huge-shape": b'{"w": {"shape": [1e308], "data_offsets": [0, 4]}}',
    }
    for kind, raw in bad_headers.items():
        yield _model_case(f"{family}/bad-header-{kind}/{index}", (("model.safetensors", _safetensors(raw, 16)),),
                          "error")
    yield _model_case(f"{family}/header-size-huge/{index}",
                      (("model.safetensors", _safetensors(header, 0, claimed=2**62)),), "error")
    yield _model_case(f"{family}/header-size-past-end/{index}", (("model.safetensors", _safetensors(
        header, 0, claimed=10_000)),), "error")
    yield _model_case(f"{family}/truncated-data/{index}", (("model.safetensors", valid[:-3]),), "error")
    yield _model_case(f"{family}/seven-bytes/{index}", (("model.safetensors", b"\x01" * 7),), "error")
    kind, damaged = _mutate(valid, rng)
    yield _model_case(f"{family}/mutated-{kind}/{index}", (("model.safetensors", damaged),), "either")
    shard = (("model-00001-of-00001.safetensors", valid),)
    index_files = {
        "dotdot": {"weight_map": {"w": "../outside/model.safetensors"}},
        "absolute": {"weight_map": {"w": "/etc/passwd"}},
        "linked-folder": {"weight_map": {"w": "sub/model.safetensors"}},
        "missing": {"weight_map": {"w": "model-00002-of-00002.safetensors"}},
        "not-a-map": {"weight_map": ["a"]},
        "int-values": {"weight_map": {"w": 5}},
        "empty-map": {"weight_map": {}},
        "folder-itself": {"weight_map": {"w": "."}},
    }
    outside = ((OUTSIDE + "model.safetensors", valid),)
    for kind, content in index_files.items():
        links = (("sub", "outside"),) if kind == "linked-folder" else ()
        yield _model_case(f"{family}/shard-index-{kind}/{index}", (
            ("model.safetensors.index.json", json.dumps(content).encode()), *shard, *outside), "error", links=links)
    yield _model_case(f"{family}/shard-index-valid/{index}", (
        ("model.safetensors.index.json", json.dumps({"weight_map": {"w": shard[0][0]}}).encode()), *shard), "ok",
        rows * columns)
    yield _model_case(f"{family}/shard-index-nested/{index}", (
        ("model.safetensors.index.json", b"[" * 50_000 + b"]" * 50_000), *shard), "error")
    for kind, config in (("nested", b"[" * 50_000 + b"]" * 50_000), ("utf16", _CONFIG.decode().encode("utf-16")),
                         ("array", b"[]"), ("other-model", b'{"model_type": "llama"}'),
                         ("long-int", b'{"model_type": "gemma3", "n": ' + b"9" * 5000 + b"}")):
        yield _model_case(f"{family}/config-{kind}/{index}", (("model.safetensors", valid),), "error", config=config)


# ---------------------------------------------------------------------------------------------------- corpus


_FAMILIES: tuple[tuple[Callable[[np.random.Generator, int], Iterator[FuzzCase]], int], ...] = (
    (_valid_audit_cases, 8),
    (_stray_cases, 3),
    (_structural_cases, 4),
    (_junk_cases, 4),
    (_mutated_audit_cases, 150),
    (_parquet_cases, 5),
    (_many_group_cases, 2),
    (_valid_card_cases, 5),
    (_bad_card_cases, 3),
    (_mutated_card_cases, 100),
    (_upload_cases, 4),
    (_manifest_image_cases, 3),
    (_bomb_cases, 1),
    (_model_cases, 3),
)


def generate_corpus(seed: int = 0) -> list[FuzzCase]:
    """Every case, deterministically from ``seed`` (about 1,300)."""
    cases: list[FuzzCase] = []
    root = np.random.SeedSequence(seed)
    for (family, repeats), child in zip(_FAMILIES, root.spawn(len(_FAMILIES))):
        rng = np.random.default_rng(child)
        for index in range(repeats):
            cases.extend(family(rng, index))
    ids = [case.case_id for case in cases]
    duplicates = {case_id for case_id in ids if ids.count(case_id) > 1}
    assert not duplicates, sorted(duplicates)[:5]
    return cases


def subset(cases: list[FuzzCase], size: int, seed: int = 0) -> list[FuzzCase]:
    """About ``size`` light cases, drawn with the same share from every family (each family at least once)."""
    light = [case for case in cases if not case.heavy]
    by_family: dict[str, list[FuzzCase]] = {}
    for case in light:
        by_family.setdefault(case.family, []).append(case)
    share = min(1.0, size / max(len(light), 1))
    rng = np.random.default_rng(seed)
    chosen = []
    for family in sorted(by_family):
        members = by_family[family]
        take = max(1, round(share * len(members)))
        picks = rng.choice(len(members), size=min(take, len(members)), replace=False)
        chosen.extend(members[int(i)] for i in sorted(picks))
    return chosen


# ---------------------------------------------------------------------------------------------------- harness


def _materialise(case: FuzzCase, folder: Path) -> Path:
    """Write the case under ``folder/root`` (its input folder) and ``folder/outside``; return the input path."""
    root = folder / "root"
    root.mkdir(parents=True)
    (folder / "outside").mkdir()
    for relative, data in case.files:
        path = folder / "outside" / relative[len(OUTSIDE):] if relative.startswith(OUTSIDE) else root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for link, target in case.links:
        (root / link).symlink_to(folder / target)
    return root / case.main


def _run_target(case: FuzzCase, path: Path, scratch: Path) -> tuple[str, str]:
    """Run one case in this process; ("ok" | "clean_error" | failure kind, detail)."""
    from fairmed_core.errors import FairMedInputError

    if case.target in ("audit", "card"):
        from fairmed_core import cli

        out_json = scratch / "out.json"
        if case.target == "audit":
            argv = ["audit", str(path), *_AUDIT_ARGS, *case.args, "--json", str(out_json)]
        else:
            argv = ["card", "--data", str(path), "--json", str(out_json)]
        stderr, stdout = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            try:
                code = cli.main(argv)
            except SystemExit as exit_:  # argparse refusing a flag value
                code = exit_.code
            except MemoryError:
                return "memory", "MemoryError"
            except Exception as error:  # noqa: BLE001 - escaped the CLI: the user would see a traceback
                frame = traceback.extract_tb(error.__traceback__)[-1]
                return "traceback", (f"{type(error).__name__}: {str(error)[:160]} at "
                                     f"{Path(frame.filename).name}:{frame.lineno}")
        lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
        if code == 2:
            one_line = len(lines) == 1 and "error:" in lines[0] and "Traceback" not in lines[0]
            return ("clean_error", lines[-1][:300]) if one_line or (lines and "usage:" in lines[0]) else (
                "traceback", " | ".join(lines)[-300:])
        if code != 0:
            return "traceback", f"exit code {code}: {' | '.join(lines)[-300:]}"
        payload = json.loads(out_json.read_text())
        if case.target == "audit":
            overall = [g for g in payload["groups"] if g["source"] == "ALL" and g["attribute"] == "overall"]
            rows = case.check.get("rows")
            if rows is not None and (len(overall) != 1 or overall[0]["n"] != rows):
                return "wrong_result", f"overall n {[g['n'] for g in overall]}, the table has {rows} rows"
            return "ok", f"{len(payload['groups'])} group rows"
        cases = case.check.get("cases")
        if cases is not None and payload["n_cases"] != cases:
            return "wrong_result", f"{payload['n_cases']} cases, the manifest has {cases}"
        return "ok", f"{payload['n_cases']} cases"
    try:
        if case.target == "upload":
            from fairmed_core.data.uploads import MAX_MODEL_SIDE, read_uploaded_image

            result = read_uploaded_image(path.read_bytes(), path.name)
            if result.image.mode not in ("L", "RGB") or max(result.image.size) > MAX_MODEL_SIDE:
                return "wrong_result", f"mode {result.image.mode} size {result.image.size}"
            size = case.check.get("size")
            if size is not None and list(result.original_size) != size:
                return "wrong_result", f"size {result.original_size}, expected {size}"
            return "ok", f"{result.file_format} {result.original_size}"
        if case.target == "manifest_images":
            from fairmed_core.data import read_manifest

            dataset = read_manifest(path)
            dataset.check_images()  # headers only, as `fairmed card` would; then every pixel
            images = [dataset.load_image(case_id) for case_id in dataset.cases["case_id"]]
            size = case.check.get("size")
            if size is not None and [list(image.size) for image in images] != [size]:
                return "wrong_result", f"sizes {[image.size for image in images]}, expected {size}"
            return "ok", f"{len(images)} images"
        if case.target == "model_dir":
            from fairmed_core.models.loading import check_model_directory

            checked = check_model_directory(path)
            parameters = case.check.get("parameters")
            if parameters is not None and checked.parameter_count != parameters:
                return "wrong_result", f"{checked.parameter_count} parameters, expected {parameters}"
            return "ok", f"{checked.parameter_count} parameters"
    except FairMedInputError as error:
        text = str(error)
        return ("clean_error", text[:300]) if "\n" not in text else ("traceback", "multi-line error: " + text[:300])
    except MemoryError:
        return "memory", "MemoryError"
    except RecursionError:
        return "traceback", "RecursionError"
    except Exception as error:  # noqa: BLE001 - exactly what the harness looks for
        frame = traceback.extract_tb(error.__traceback__)[-1]
        return "traceback", f"{type(error).__name__}: {str(error)[:160]} at {Path(frame.filename).name}:{frame.lineno}"
    raise ValueError(f"unknown target {case.target!r}")


def _resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _address_space_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def run_case(case: FuzzCase, *, timeout_s: float = 30.0, memory_bytes: int = 2 * 2**30) -> Outcome:
    """Run ``case`` in a forked child with a timeout and an address-space cap of ``memory_bytes`` on top of what
    this process already maps; classify what happened against the case's expectation."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as folder:
        folder = Path(folder)
        path = _materialise(case, folder)
        scratch = folder / "scratch"
        scratch.mkdir()
        reader, writer = os.pipe()
        started = time.perf_counter()
        baseline_rss = _resident_bytes() // 1024  # KiB, as ru_maxrss; the child starts with these pages mapped
        pid = os.fork()
        if pid == 0:  # the child: cap memory, run, report through the pipe, never return
            os.close(reader)
            try:
                cap = _address_space_bytes() + memory_bytes
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
                kind, detail = _run_target(case, path, scratch)
            except MemoryError:
                kind, detail = "memory", "MemoryError outside the target"
            except BaseException as error:  # noqa: BLE001
                kind, detail = "crash", f"{type(error).__name__}: {str(error)[:200]}"
            try:
                os.write(writer, json.dumps({"kind": kind, "detail": detail}).encode()[:60_000])
            finally:
                os._exit(0)
        os.close(writer)
        chunks, status, usage = [], None, None
        timeout_s = max(timeout_s, case.timeout_s or 0.0)
        deadline = started + timeout_s
        while status is None:
            ready, _, _ = select.select([reader], [], [], 0.05)
            if ready:
                chunk = os.read(reader, 65536)
                if chunk:
                    chunks.append(chunk)
            done_pid, raw_status, raw_usage = os.wait4(pid, os.WNOHANG)
            if done_pid:
                status, usage = raw_status, raw_usage
            elif time.perf_counter() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status, usage = os.wait4(pid, 0)
                os.close(reader)
                return Outcome(case.case_id, "hang", f"killed after {timeout_s:.0f} s", timeout_s,
                               max(usage.ru_maxrss - baseline_rss, 0) / 1024)
        while True:
            chunk = os.read(reader, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(reader)
        seconds = time.perf_counter() - started
        growth_mb = max(usage.ru_maxrss - baseline_rss, 0) / 1024
        if not chunks:
            how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {status}"
            return Outcome(case.case_id, "memory" if os.WIFSIGNALED(status) else "crash",
                           f"child died without a report ({how})", seconds, growth_mb)
        report = json.loads(b"".join(chunks))
        kind, detail = report["kind"], report["detail"]
        if kind == "clean_error" and case.expect == "ok":
            kind = "refused_valid"
        elif kind == "ok" and case.expect == "error":
            kind = "accepted_garbage"
        return Outcome(case.case_id, kind, detail, seconds, growth_mb)


def warm_up() -> None:
    """Import and exercise every target once in this process, so that each forked child starts warm."""
    for case in (*_valid_audit_cases(np.random.default_rng(0), 0),):
        if case.case_id.endswith("plain-0"):
            with tempfile.TemporaryDirectory() as folder:
                path = _materialise(case, Path(folder))
                scratch = Path(folder) / "scratch"
                scratch.mkdir()
                _run_target(case, path, scratch)
    import pydicom  # noqa: F401
    import pydicom.pixels  # noqa: F401

    from fairmed_core.data import read_manifest  # noqa: F401
    from fairmed_core.data.uploads import read_uploaded_image  # noqa: F401
    from fairmed_core.models.loading import check_model_directory  # noqa: F401


def run_corpus(cases: list[FuzzCase], *, timeout_s: float = 30.0, memory_bytes: int = 2 * 2**30,
               progress: Callable[[int, int, Outcome], None] | None = None) -> list[Outcome]:
    """Run every case (see ``run_case``); ``progress(done, total, outcome)`` after each."""
    warm_up()
    outcomes = []
    for number, case in enumerate(cases, start=1):
        outcome = run_case(case, timeout_s=timeout_s, memory_bytes=memory_bytes)
        outcomes.append(outcome)
        if progress is not None:
            progress(number, len(cases), outcome)
    return outcomes


def summarise(cases: list[FuzzCase], outcomes: list[Outcome]) -> dict:
    """Counts per outcome kind, per target, the slowest case and the largest memory growth."""
    kinds = Counter(outcome.kind for outcome in outcomes)
    per_target: dict[str, Counter] = {}
    for case, outcome in zip(cases, outcomes):
        per_target.setdefault(case.target, Counter())[outcome.kind] += 1
    slowest = max(outcomes, key=lambda o: o.seconds)
    largest = max(outcomes, key=lambda o: o.peak_rss_growth_mb)
    return {
        "cases": len(outcomes),
        "clean_errors": kinds["clean_error"],
        "correct_results": kinds["ok"],
        "failures": sum(count for kind, count in kinds.items() if kind not in ("ok", "clean_error")),
        "kinds": dict(sorted(kinds.items())),
        "per_target": {target: dict(sorted(counts.items())) for target, counts in sorted(per_target.items())},
        "slowest": [slowest.case_id, round(slowest.seconds, 2)],
        "largest_memory_growth_mb": [largest.case_id, round(largest.peak_rss_growth_mb, 1)],
        "failed": [[o.case_id, o.kind, o.detail] for o in outcomes if o.failed],
        "unexplained_failures": [o.case_id for o in outcomes if o.failed and known_open(o.case_id) is None],
    }


def known_open(case_id: str) -> str | None:
    """Why a failure of this case is known and left open (see ``KNOWN_OPEN``), or None."""
    return next((why for prefix, why in KNOWN_OPEN.items() if case_id.startswith(prefix)), None)


def _markdown(summary: dict, *, seed: int, timeout_s: float, memory_gib: float, seconds: float) -> str:
    lines = [
        SECTION,
        "",
        f"`python benchmarks/fuzz_inputs.py --seed {seed} --write-docs`: {summary['cases']:,} generated inputs "
        f"(seed {seed}), each run in-process in a forked child with a {timeout_s:.0f} s timeout (300 s for the "
        f"150- and 200-group audits, slow but bounded) and an "
        f"address-space cap of {memory_gib:g} GiB above the parent's; {seconds / 60:.1f} min on one core.",
        "",
        f"- clean errors (a `FairMedInputError`; for the CLI exit 2 and one line): {summary['clean_errors']:,}",
        f"- correct results (checked: rows, cases, parameters, image sizes): {summary['correct_results']:,}",
        f"- failures (traceback, hang, memory, wrong or refused valid input, accepted garbage): "
        f"{summary['failures']:,}",
        f"- slowest case: `{summary['slowest'][0]}` ({summary['slowest'][1]} s); largest memory growth: "
        f"`{summary['largest_memory_growth_mb'][0]}` ({summary['largest_memory_growth_mb'][1]} MB)",
        "",
        "| target | " + " | ".join(sorted({k for counts in summary["per_target"].values() for k in counts})) + " |",
    ]
    kinds = sorted({k for counts in summary["per_target"].values() for k in counts})
    lines.append("|---|" + "---:|" * len(kinds))
    for target, counts in summary["per_target"].items():
        lines.append(f"| {target} | " + " | ".join(str(counts.get(kind, 0)) for kind in kinds) + " |")
    if summary["failed"]:
        lines += ["", "Failures (those marked known are open in code outside the input readers):", ""]
        lines += [f"- `{case_id}`: {kind}: {detail}" + (" (known)" if known_open(case_id) else "")
                  for case_id, kind, detail in summary["failed"][:30]]
        reasons = sorted({known_open(case_id) for case_id, _, _ in summary["failed"] if known_open(case_id)})
        lines += ["", *(f"Known: {reason}." for reason in reasons)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, default=None, help="run about this many light cases only")
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--memory-gib", type=float, default=2.0)
    parser.add_argument("--write-docs", action="store_true", help="write the counts into docs/BENCHMARKS.md")
    parser.add_argument("--json", help="write the summary as JSON here")
    args = parser.parse_args(argv)
    cases = generate_corpus(args.seed)
    if args.subset is not None:
        cases = subset(cases, args.subset, args.seed)
    started = time.perf_counter()

    def progress(done: int, total: int, outcome: Outcome) -> None:
        if outcome.failed:
            print(f"[{done}/{total}] {outcome.case_id}: {outcome.kind}: {outcome.detail}", flush=True)
        elif done % 100 == 0:
            print(f"[{done}/{total}] {time.perf_counter() - started:.0f} s", flush=True)

    outcomes = run_corpus(cases, timeout_s=args.timeout_s, memory_bytes=int(args.memory_gib * 2**30),
                          progress=progress)
    seconds = time.perf_counter() - started
    summary = summarise(cases, outcomes)
    print(json.dumps({k: v for k, v in summary.items() if k != "failed"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    if args.write_docs:
        from benchmarks._report import replace_section

        replace_section(ROOT / "docs" / "BENCHMARKS.md", SECTION,
                        _markdown(summary, seed=args.seed, timeout_s=args.timeout_s, memory_gib=args.memory_gib,
                                  seconds=seconds), preamble="# Benchmarks\n")
    return 0 if not summary["unexplained_failures"] else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.exit(main())
