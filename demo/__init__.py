"""Demo workers (Concelier advisories, Excititor VEX) built on the stellaops_worker SDK."""
