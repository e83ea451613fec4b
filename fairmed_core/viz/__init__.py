"""fairmed_core.viz"""
