"""Ratings: incremental Elo after each battle (``elo``) and a batch Bradley-Terry fit with
bootstrap confidence intervals for the ranked leaderboard (``bradley_terry``)."""
