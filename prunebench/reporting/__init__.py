"""Reporting: the record schema, the leaderboard, paper claims, plots and run summaries."""
