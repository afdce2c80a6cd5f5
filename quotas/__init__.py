"""Admission policy: quotas, throttles and breakers (grows with the admission issue)."""
