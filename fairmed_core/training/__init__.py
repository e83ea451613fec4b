"""fairmed_core.training"""
