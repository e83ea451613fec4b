"""fairmed_core.data"""
