"""FairMed core: data, models, fairness audits, training and counterfactuals for clinical VLM review.

This package never imports streamlit; the dashboard in ``app.py``/``pages/`` only calls into it.
"""

__version__ = "0.1.0"
