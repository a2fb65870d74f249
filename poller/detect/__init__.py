"""Pure change detection: what to poll (planner), what changed (diff), who takes it (routing)."""
