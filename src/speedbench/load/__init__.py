"""The load generator: closed-loop concurrency, warm-up, multi-turn conversations, timeouts."""
