"""The engine, pure and in memory: window schedule, the least-squares fits, stitching, shots, the video engine."""
