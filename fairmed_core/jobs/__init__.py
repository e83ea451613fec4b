"""Long work behind one hand-off: each job's config dataclass (:mod:`fairmed_core.jobs.configs`) is declared once
and drives the job's command-line flags, its form on the pages and the ``job.json`` a page hands to a
background job."""
