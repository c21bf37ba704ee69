"""The simulated platform (sandbox) and, later, game-day drills."""
