"""fairmed_core.models"""
