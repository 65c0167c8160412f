"""Why an item is recommended: attention views now; per-item attributions build on these."""
