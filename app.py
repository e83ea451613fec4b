"""FairMed dashboard entry point: navigation over the pages and the shared sidebar (workspace, dataset).

Run with ``streamlit run app.py``. Every page only calls ``fairmed_core`` and renders what it returns.
"""

from __future__ import annotations

import streamlit as st

from pages._common import sidebar

st.set_page_config(page_title="FairMed", page_icon=":material/balance:", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/overview.py", title="Overview", icon=":material/dataset:", default=True),
        st.Page("pages/inference.py", title="Inference", icon=":material/psychology:"),
        st.Page("pages/fairness_audit.py", title="Fairness audit", icon=":material/balance:"),
        st.Page("pages/counterfactuals.py", title="Counterfactuals", icon=":material/compare:"),
        st.Page("pages/training.py", title="Training", icon=":material/model_training:"),
        st.Page("pages/fairgrad.py", title="FairGrad", icon=":material/call_split:"),
        st.Page("pages/review.py", title="Review", icon=":material/fact_check:"),
    ]
)
sidebar()
navigation.run()
