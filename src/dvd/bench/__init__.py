"""`dvd bench`: stage timers, FLOP counts and the JSON report."""
