"""Scenario modules: each function builds one scenario and returns its accounting row."""
