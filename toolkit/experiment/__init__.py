"""Experiments: `cnlab run EXPERIMENT.yaml` — workload, fault timeline, accounting, checks, report."""
