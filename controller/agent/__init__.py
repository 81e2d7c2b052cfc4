"""``oab-agent``: what runs inside each agent's task (init container and snapshot sidecar).

Its own column beside the controller's layers: it may use the base, api, core, observability and
adapters layers, never the reconciler, the runtime or the CLI (it ships in the same image but runs
with the agent's task role).
"""
