"""Pictures of explanations: static figures (matplotlib)."""
