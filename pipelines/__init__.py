"""Runs that chain commands: the quickstart, the comparison studies and the build of the shipped data."""
