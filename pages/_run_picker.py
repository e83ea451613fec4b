"""The run picker the pages share: a multiselect of runs whose choice survives the page's reruns, and that a run
appearing while the page is open (started on the page or in a shell) joins without a reload."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import streamlit as st


def pick_runs(label: str, names: Sequence[str], *, key: str, default: Sequence[str],
              joinable: Sequence[str] | None = None, scope: Hashable = None,
              format_func: Callable[[str], str] = str, help: str | None = None) -> list[str]:
    """The names of the chosen runs among ``names``.

    The choice is kept by run name under ``key`` (a run's label may change when it finishes). It starts as
    ``default``, and again whenever ``scope`` changes (e.g. the data the runs are compared on). A name of
    ``joinable`` (default: every name) that was not there on the page's previous run is added in front; a run
    that is gone leaves the choice."""
    seen_key, scope_key = f"{key}_seen", f"{key}_scope"
    seen = st.session_state.get(seen_key)
    if key not in st.session_state or st.session_state.get(scope_key) != scope:
        st.session_state[key] = [name for name in default if name in names]
    elif seen is not None:
        new = [name for name in (names if joinable is None else joinable) if name not in seen]
        st.session_state[key] = new + [name for name in st.session_state[key] if name in names and name not in new]
    st.session_state[scope_key] = scope
    st.session_state[seen_key] = list(names)
    return st.multiselect(label, list(names), format_func=format_func, key=key, help=help)
