"""Live serving: the event and feedback store (``store``); the HTTP app builds on it."""
