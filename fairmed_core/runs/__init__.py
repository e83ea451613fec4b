"""fairmed_core.runs"""
