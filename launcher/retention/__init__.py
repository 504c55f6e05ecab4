"""Data retention (FR-003): pure policy, the one-shot mode, the running node's actor, capped tick streams."""
