"""Probe SFT recipes for a tiny FairMedGemma that sees the finding in every source (issue 16).

Trains one recipe in memory (the benchmark generated and rendered here, no files) and answers the first
``--eval-n`` test cases of each source of the default benchmark greedily; prints and writes recall, specificity,
F1 and accuracy per source (and for dark skin and women in chest X-rays). The recipes compared in docs/RESULTS.md
("A tiny FairMedGemma that sees the finding") are its command lines there. ``--render-size`` draws the images at
that size instead of the benchmark's 64 pixels (the processor then has nothing to downsample): some early probes
ran so, and it matters (see the section).

Run:  .venv/bin/python benchmarks/tiny_recipe_probe.py --arch '{"image_size": 32}' --warmup 15 --freeze \
          --epochs 8 --eval-n 800 --out /tmp/probe.json
"""
import argparse, json, math, os, sys, time, tempfile
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from dataclasses import replace
from pathlib import Path
import numpy as np, torch
from PIL import Image
torch.set_num_threads(1)
from fairmed_core.data.synth import SynthConfig, generate, render_many
from fairmed_core.models.tiny import build_processor, build_tiny_model, build_tokenizer
from fairmed_core.models.tiny_config import TinyModelConfig
from fairmed_core.models.loading import load_model
from fairmed_core.models.generation import generate_answers
from fairmed_core.models.generation_options import GenerationOptions
from fairmed_core.training import sft as S
from fairmed_core.training.sft_config import SFTConfig
from fairmed_core.training import reasoning_targets as R

p = argparse.ArgumentParser()
p.add_argument("--n", type=int, default=6000); p.add_argument("--seed", type=int, default=0)
p.add_argument("--arch", default="{}"); p.add_argument("--epochs", type=int, default=12)
p.add_argument("--lr", type=float, default=2e-3); p.add_argument("--batch", type=int, default=32)
p.add_argument("--target", default="reason"); p.add_argument("--eval-n", type=int, default=300)
p.add_argument("--drop", default="", help="source:attr:group:keep_fraction,...")
p.add_argument("--warmup", type=int, default=0); p.add_argument("--warmup-lr", type=float, default=3e-4)
p.add_argument("--freeze", action="store_true")
p.add_argument("--render-size", type=int, default=64)
p.add_argument("--out", required=True); p.add_argument("--save", default="")
a = p.parse_args()
arch = TinyModelConfig(**json.loads(a.arch))
cfg = SynthConfig(n=a.n, seed=a.seed, image_size=a.render_size)
cases = generate(cfg)
rng = np.random.default_rng(123)
train = [c for c in cases if c.split == "train"]
for spec in filter(None, a.drop.split(",")):
    src, attr, grp, keep = spec.split(":")
    train = [c for c in train if not (c.source == src and c.group(attr) == grp and rng.random() > float(keep))]
test_cfg = SynthConfig(n=6000, seed=0, image_size=a.render_size)
test = [c for c in generate(test_cfg) if c.split == "test"]
test = [c for s in ("synth_cxr", "synth_derm", "synth_mammo") for c in [t for t in test if t.source == s][: a.eval_n]]
def pil(arr): return Image.fromarray(arr)
if a.target == "answer_first":
    R.reasoning_target = lambda case: f"\\boxed{{{case.answer}}} <think> {R.reasoning_text(case)} </think>"
    S.reasoning_target = R.reasoning_target
t0 = time.perf_counter()
tokenizer = build_tokenizer(S.tiny_corpus()); processor = build_processor(tokenizer, arch)
torch.manual_seed(a.seed)
model = build_tiny_model(tokenizer, arch, seed=a.seed)
images = [pil(x) for x in render_many(train)]
ex = S.encode_sft_examples(processor, train, images)
if a.warmup:
    vt = model.model.vision_tower; srcs = sorted({c.source for c in train})
    head = torch.nn.Linear(arch.vision_hidden, len(srcs))
    y = torch.tensor([c.observed_label for c in train], dtype=torch.float32); si = torch.tensor([srcs.index(c.source) for c in train])
    vopt = torch.optim.AdamW(list(vt.parameters()) + list(head.parameters()), lr=a.warmup_lr, weight_decay=0.01)
    px = ex["pixel_values"]
    for ep in range(a.warmup):
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(ep))
        for i in range(0, len(train), 32):
            idx = perm[i:i+32]; h = vt(pixel_values=px[idx]).last_hidden_state
            logit = head(h.mean(1) + h.max(1).values).gather(1, si[idx, None]).squeeze(1)
            l = torch.nn.functional.binary_cross_entropy_with_logits(logit, y[idx]); vopt.zero_grad(); l.backward(); vopt.step()
        print("warmup", ep, round(float(l), 3), f"{time.perf_counter()-t0:.0f}s", flush=True)
if a.freeze:
    [q.requires_grad_(False) for q in model.model.vision_tower.parameters()]
config = SFTConfig(epochs=a.epochs, batch_size=a.batch, learning_rate=a.lr, model=arch)
n = len(train); total = math.ceil(n / a.batch) * a.epochs
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
g = torch.Generator().manual_seed(a.seed); step = 0; model.train(); losses = []
for epoch in range(a.epochs):
    order = torch.randperm(n, generator=g)
    for s0 in range(0, n, a.batch):
        rows = order[s0:s0 + a.batch]
        b = {k: v[rows] for k, v in ex.items()}
        w = int(b["attention_mask"].sum(1).max()); b = {k: (v[:, :w] if v.dim() == 2 else v) for k, v in b.items()}
        for gr in opt.param_groups: gr["lr"] = S._learning_rate(step, total, config)
        loss = model(**b).loss; opt.zero_grad(); loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); step += 1
        losses.append(float(loss.detach()))
    print(f"epoch {epoch} loss {np.mean(losses[-20:]):.4f} t {time.perf_counter()-t0:.0f}s", flush=True)
train_s = time.perf_counter() - t0
model.eval()
d = Path(a.save) if a.save else Path(tempfile.mkdtemp())
model.save_pretrained(d); processor.save_pretrained(d)
loaded = load_model(d, device="cpu")
timgs = [[pil(x)] for x in render_many(test)]
gens = generate_answers(loaded, [c.problem for c in test], timgs, GenerationOptions(batch_size=64, max_new_tokens=40), choices=["yes", "no"])
res = {"args": vars(a), "train_cases": n, "train_s": round(train_s, 1), "final_loss": float(np.mean(losses[-20:]))}
def stats(rows):
    tp = sum(1 for c, g in rows if c.answer == "yes" and g.answer == "yes"); fn = sum(1 for c, g in rows if c.answer == "yes" and g.answer != "yes")
    fp = sum(1 for c, g in rows if c.answer == "no" and g.answer == "yes"); tn = len(rows) - tp - fn - fp
    return {"n": len(rows), "recall": round(tp / max(1, tp + fn), 3), "spec": round(tn / max(1, tn + fp), 3),
            "f1": round(2 * tp / max(1, 2 * tp + fp + fn), 3), "acc": round((tp + tn) / max(1, len(rows)), 3),
            "fail": sum(1 for c, g in rows if not g.format_ok)}
pairs = list(zip(test, gens))
for s in ("synth_cxr", "synth_derm", "synth_mammo"):
    res[s] = stats([(c, g) for c, g in pairs if c.source == s])
res["derm_dark"] = stats([(c, g) for c, g in pairs if c.source == "synth_derm" and c.skin_tone == "dark"])
res["cxr_F"] = stats([(c, g) for c, g in pairs if c.source == "synth_cxr" and c.sex == "F"])
print(json.dumps(res, indent=1)); Path(a.out).write_text(json.dumps(res, indent=1))
