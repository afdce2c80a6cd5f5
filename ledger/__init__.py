"""The ledger: jobs, leases, events and artifacts; the single source of truth."""
