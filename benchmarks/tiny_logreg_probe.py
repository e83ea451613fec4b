"""The baseline the tiny vision tower is measured against: logistic regression on area-averaged pixels of chest
X-rays (AUROC on the default test split), trained on the default benchmark and on a 24,000-case one (seed 1).
Numbers in docs/RESULTS.md, "A tiny FairMedGemma that sees the finding".

Run:  .venv/bin/python benchmarks/tiny_logreg_probe.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline
from PIL import Image
from fairmed_core.data.synth import SynthConfig, generate, render_many
for n, seed in ((6000, 0), (24000, 1)):
    cases = [c for c in generate(SynthConfig(n=n, seed=seed)) if c.source == "synth_cxr" and c.split == "train"]
    test = [c for c in generate(SynthConfig()) if c.source == "synth_cxr" and c.split == "test"]
    def feats(cs, d=16): return np.stack([np.asarray(Image.fromarray(x).convert("L").resize((d, d), Image.Resampling.BOX), dtype=np.float32).ravel() / 255 for x in render_many(cs)])
    for d in (16, 32):
        m = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000)).fit(feats(cases, d), [c.observed_label for c in cases])
        print(n, d, "AUC", round(roc_auc_score([c.label for c in test], m.predict_proba(feats(test, d))[:, 1]), 3), flush=True)
