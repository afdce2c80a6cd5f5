"""Quota, Throttle and CircuitBreaker models arrive with the admission-control issue."""
