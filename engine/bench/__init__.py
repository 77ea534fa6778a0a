"""Benchmarks behind ``inventory-engine bench``: each prints figures as JSON, none is a test."""
