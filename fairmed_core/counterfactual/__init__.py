"""fairmed_core.counterfactual"""
