"""One input -> one output folder, and everything about files and processes around the engine."""
