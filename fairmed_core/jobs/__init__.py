"""Long work behind one signature: ``fairmed_core.jobs.<job>.run(config, out_dir, progress)``.

Each job's config dataclass is declared once (:mod:`fairmed_core.jobs.configs`) and drives the job's
command-line flags, its form on the pages and the ``job.json`` a page hands to a background job. ``progress``
is called as ``progress(done, total, what)``. The jobs: ``evaluation``, ``sft``, ``grpo_training``,
``fairgrad_images``, ``fairgrad_tabular``, ``generator_training`` and ``counterfactual_analysis``. Jobs write
through the run store (:mod:`fairmed_core.runs`) and sit above it; the command line and the pages sit above them.
"""
