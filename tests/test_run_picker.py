"""The shared run picker (pages/_run_picker.py): the choice survives reruns, a run that appears joins it, a run that
is gone leaves it, and a new scope starts from the default again."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _picker_page():
    import streamlit as st

    from pages._run_picker import pick_runs

    names = st.session_state.get("test_names", ["a", "b", "c"])
    chosen = pick_runs("Runs", names, key="runs", default=names[:1], joinable=st.session_state.get("test_joinable"),
                       scope=st.session_state.get("test_scope"))
    st.write(f"chosen={','.join(chosen)}")


def _chosen(app: AppTest) -> list[str]:
    text = [m.value for m in app.markdown if m.value.startswith("chosen=")][-1]
    return [name for name in text.removeprefix("chosen=").split(",") if name]


def test_the_choice_is_kept_new_runs_join_gone_runs_leave_and_a_new_scope_resets():
    app = AppTest.from_function(_picker_page, default_timeout=30)
    app.run()
    assert _chosen(app) == ["a"]
    app.multiselect(key="runs").set_value(["a", "c"]).run()
    assert _chosen(app) == ["a", "c"]
    app.session_state["test_names"] = ["a", "b", "c", "d"]  # a run appears (started in a shell)
    app.run()
    assert _chosen(app) == ["d", "a", "c"]
    app.session_state["test_names"] = ["a", "b", "d"]  # one is deleted
    app.run()
    assert _chosen(app) == ["d", "a"]
    app.session_state["test_names"] = ["a", "b", "d", "e"]
    app.session_state["test_joinable"] = ["a", "b", "d"]  # e.g. a shipped record: listed, not added
    app.run()
    assert _chosen(app) == ["d", "a"]
    app.session_state["test_scope"] = "other data"
    app.run()
    assert _chosen(app) == ["a"]
