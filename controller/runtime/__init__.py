"""One controller replica: workers, the leader-only scheduler, the composition root, the daemon."""
