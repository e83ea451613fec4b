"""The card of a counterfactual generator (README.md in its folder): how it was trained and on what.

One job: write the training half of the card from the generator's own record (``generator_config.json``), so
the numbers cannot drift from the weights. The validity half (how good its pairs are, per source and edit
setting) is measured by ``benchmarks/counterfactual_generator_quality.py --card`` and replaces its own section.
"""

from __future__ import annotations

from pathlib import Path

from fairmed_core.counterfactual.analysis import CLASSIFIER_DIR
from fairmed_core.counterfactual.attribute_classifier import load_attribute_classifier
from fairmed_core.counterfactual.generator import load_generator
from fairmed_core.report.sections import replace_section

__all__ = ["write_generator_card"]

TRAINING_HEADING = "## Training"


def _training_section(folder: Path, command: str) -> str:
    generator = load_generator(folder)
    info, config = generator.info, generator.config
    parameters = sum(p.numel() for p in generator.unet.parameters())
    counts = "\n".join(f"| {source} | {info.source_modes[source]} | "
                       + " | ".join(str(info.class_counts[source].get(c, 0)) for c in config.classes) + " |"
                       for source in config.sources)
    lines = [
        TRAINING_HEADING, "",
        f"Reproduce with `{command}`.", "",
        f"- Network: diffusers `UNet2DModel`, {parameters:,} parameters, blocks {list(config.block_out_channels)}, "
        f"{config.layers_per_block} layer(s) per block, self-attention at the deepest level only; "
        f"{config.image_size}x{config.image_size}, RGB in and out (grayscale sources replicated).",
        f"- Condition: (source, {config.attribute}) with one null class per source for classifier-free guidance: "
        f"{config.num_class_embeds} class embeddings.",
        f"- Objective: v-prediction on the cosine schedule (1,000 steps); {info.step:,} AdamW steps of batch "
        f"{config.batch_size}, learning rate {config.learning_rate:g} after {config.warmup_steps} warm-up steps, "
        f"weight decay {config.weight_decay:g}, gradient clipping at 1, EMA {config.ema_decay:g} (the saved "
        f"weights); null class shown with probability {config.p_uncond:g}; sampling weight (cases of the "
        f"class)^-{config.class_balance:g}; seed {config.seed}.",
        f"- Training time: {info.train_seconds / 60:.0f} min on CPU (summed over resumed runs).",
        f"- Edit defaults: {config.inversion_steps} DDIM steps, strength {config.strength:g}, guidance "
        f"{config.guidance:g} (deterministic DDIM inversion under the factual group without guidance, "
        "regeneration under the target with guidance).", "",
        "Training images (the train split, attribute known):", "",
        "| Source | Mode | " + " | ".join(config.classes) + " |",
        "|---|---|" + "---|" * len(config.classes),
        counts, "",
    ]
    classifier_dir = folder / CLASSIFIER_DIR
    if classifier_dir.is_dir():
        classifier = load_attribute_classifier(classifier_dir)
        lines += ["Attribute classifier (`attribute_classifier/`, judges effectiveness): one small CNN per source "
                  "trained on the same real training images, inverse-frequency weighted. Balanced accuracy on the "
                  "real validation images:", ""]
        for source, item in classifier.infos.items():
            score = "unknown" if item.val_balanced_accuracy is None else f"{item.val_balanced_accuracy:.2f}"
            verdict = "judges effectiveness" if item.trustworthy else "too weak: effectiveness is not judged"
            lines.append(f"- {source}: {score} on {item.val_n} images ({verdict})")
        lines.append("")
    return "\n".join(lines)


def write_generator_card(folder: str | Path, *, command: str) -> Path:
    """Write (or refresh) the training section of ``folder/README.md``; other sections are kept."""
    folder = Path(folder)
    card = folder / "README.md"
    replace_section(card, TRAINING_HEADING, _training_section(folder, command),
                    preamble=f"# Counterfactual generator: {folder.name}\n\nA class-conditional diffusion model "
                             "that redraws a benchmark image with the patient's sex changed, for FairMed's "
                             "counterfactual analysis (DESIGN.md section 6). Pairs it makes are counterfactuals "
                             "only as far as the validity section below says.\n")
    return card
