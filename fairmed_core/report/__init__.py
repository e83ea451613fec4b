"""fairmed_core.report"""
