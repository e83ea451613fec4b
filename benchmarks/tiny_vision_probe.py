"""Can the tiny SigLIP tower detect the finding when trained directly (BCE on a pooled linear head)?

Fits the vision tower of a fresh tiny FairMedGemma alone on one source's training images (rendered at 64 pixels
and resized to the model's ``image_size`` as the processor would) and prints the test AUROC after every epoch.
Numbers in docs/RESULTS.md, "A tiny FairMedGemma that sees the finding".

Run:  .venv/bin/python benchmarks/tiny_vision_probe.py synth_cxr 12 3e-4 6000 '{"image_size": 32}'
      (source, epochs, learning rate, benchmark size n (6000: the default benchmark, else seed 1), model sizes)
"""
import json, sys, time, numpy as np, torch
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))
torch.set_num_threads(1)
from sklearn.metrics import roc_auc_score
from fairmed_core.data.synth import SynthConfig, generate, render_many
from fairmed_core.models.tiny import build_tokenizer, build_tiny_model
from fairmed_core.models.tiny_config import TinyModelConfig
from fairmed_core.training.sft import tiny_corpus
src = sys.argv[1]; epochs = int(sys.argv[2]); lr = float(sys.argv[3]); n = int(sys.argv[4]) if len(sys.argv) > 4 else 6000
arch = TinyModelConfig(**json.loads(sys.argv[5] if len(sys.argv) > 5 else "{}"))
cases = [c for c in generate(SynthConfig(n=n, seed=1 if n != 6000 else 0)) if c.source == src]
train = [c for c in cases if c.split == "train"]
test = [c for c in generate(SynthConfig()) if c.source == src and c.split == "test"]
def tensor(cs):
    from PIL import Image
    x = np.stack([np.asarray(Image.fromarray(a).convert('RGB').resize((arch.image_size, arch.image_size), Image.Resampling.BILINEAR)) for a in render_many(cs)]).astype(np.float32) / 255.0
    if x.ndim == 3: x = np.repeat(x[..., None], 3, -1)
    return (torch.from_numpy(x).permute(0, 3, 1, 2) - 0.5) / 0.5
Xtr, Xte = tensor(train), tensor(test)
ytr = torch.tensor([c.observed_label for c in train], dtype=torch.float32); yte = np.array([c.label for c in test])
model = build_tiny_model(build_tokenizer(tiny_corpus()), arch)
vt = model.model.vision_tower
head = torch.nn.Linear(arch.vision_hidden, 1)
params = list(vt.parameters()) + list(head.parameters())
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
def fwd(x):
    h = vt(pixel_values=x).last_hidden_state  # (b, patches, hidden)
    return head(h.mean(1) + h.max(1).values).squeeze(-1)
t0 = time.time()
for ep in range(epochs):
    perm = torch.randperm(len(train))
    for i in range(0, len(train), 32):
        idx = perm[i:i+32]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(fwd(Xtr[idx]), ytr[idx])
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): s = torch.cat([fwd(Xte[i:i+256]) for i in range(0, len(test), 256)]).numpy()
    print(src, ep, round(float(loss.detach()), 3), "AUC", round(roc_auc_score(yte, s), 3), f"{time.time()-t0:.0f}s", flush=True)
