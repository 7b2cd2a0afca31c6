"""Locust load generation (see the load-generation issue)."""
