"""The jobs panel the training pages share: a live table of one kind of background job, with stop buttons,
the log of failed jobs, and (where the command supports it) a resume button for stopped or lost ones."""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import streamlit as st

from fairmed_core.runs.jobs import Job, list_jobs, start_job, stop_job
from pages._common import show_input_error, workspace

SHOWN = 12  # the newest jobs listed


def _rows(jobs: list[Job], method_names: dict[str, str], unit: str) -> pd.DataFrame:
    return pd.DataFrame([{
        "job": job.name, "method": method_names.get(job.labels.get("method", ""), job.labels.get("method", "")),
        "status": job.status,
        "progress": f"{job.progress.get('done', 0)} of {job.progress.get('total', '?')} {unit}" if job.progress else "",
        "started (UTC)": job.started_utc,
    } for job in jobs])


def jobs_panel(kind: str, *, method_names: dict[str, str], unit: str, empty: str,
               resume_argv: Callable[[Job], list[str]] | None = None) -> None:
    """The jobs labelled ``kind``, refreshed every few seconds while one runs; ``resume_argv(job)`` gives the
    command that continues a stopped or lost job (None: no resume button)."""
    running = any(job.status == "running" for job in list_jobs(workspace()) if job.labels.get("kind") == kind)

    @st.fragment(run_every=3 if running else None)
    def live() -> None:
        current = [job for job in list_jobs(workspace()) if job.labels.get("kind") == kind][:SHOWN]
        if not current:
            st.caption(empty)
            return
        st.dataframe(_rows(current, method_names, unit), hide_index=True, width="stretch")
        for job in current:
            if job.status == "running":
                if st.button(f"Stop {job.name}", key=f"{kind}_stop_{job.name}", icon=":material/stop_circle:"):
                    stop_job(job)
                    st.rerun()
                continue
            if job.status not in ("stopped", "lost", "failed"):
                continue
            left, right = st.columns([1, 3])
            if resume_argv is not None and job.status != "failed" and left.button(
                    f"Resume {job.name}", key=f"{kind}_resume_{job.name}", icon=":material/play_arrow:"):
                name = f"{job.name}-resume-{time.strftime('%H%M%S', time.gmtime())}"[:100]
                try:
                    start_job(workspace(), name, resume_argv(job), labels=dict(job.labels))
                except Exception as error:  # noqa: BLE001 - a job that cannot resume says why; the page goes on
                    show_input_error(error)
                else:
                    st.rerun()
            with right.expander(f"{job.name}: {job.status}, last lines of its log"):
                st.code(job.log_tail() or "(empty log)", language=None)
        if running and not any(job.status == "running" for job in current):
            st.rerun()  # a job just ended: refresh what the page shows below

    live()
