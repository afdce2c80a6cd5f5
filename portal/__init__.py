"""Operator portal: dashboard views, templates and the Django admin for ledger models."""
