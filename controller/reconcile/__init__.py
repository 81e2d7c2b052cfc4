"""Reconcile one agent: desired manifest + stored status + ECS -> side effects + new status."""
