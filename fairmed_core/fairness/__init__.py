"""fairmed_core.fairness"""
