"""The end-of-search summary printed by ``popnas search``."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any, TextIO


def _number(value: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


def print_summary(summary: dict[str, Any], location: str, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    status = "finished" if summary["finished"] else "stopped early"
    out.write(f"\nSearch '{summary['search']}' {status} in {timedelta(seconds=int(summary['wallTime']))}\n")
    out.write(f"  candidates trained {summary['trained']}, reused {summary['reused']}, failed {summary['failed']}\n")

    out.write(
        "\n  step  evaluated  planned  explored  trained  reused  best acc  acc Spearman  time Spearman  time MAPE %\n"
    )
    for step in summary["steps"]:
        accuracy = step["accuracyPredictor"] or {}
        timing = step["timePredictor"] or {}
        out.write(
            f"  {step['step']:>4}  {step['evaluated']:>9}  {step['planned']:>7}  {step['exploration']:>8}  "
            f"{step['trained']:>7}  {step['reused']:>6}  "
            f"{_number(step['bestAccuracy']):>8}  {_number(accuracy.get('spearman'), '{:.2f}'):>12}  "
            f"{_number(timing.get('spearman'), '{:.2f}'):>13}  {_number(timing.get('mape'), '{:.1f}'):>11}\n"
        )

    out.write("\n  best cells (validation accuracy, training time):\n")
    for rank, cell in enumerate(summary["top"], start=1):
        out.write(f"  {rank}. {cell['accuracy']:.3f}  {cell['trainingTime']:7.2f} s  {cell['cell']}\n")

    if summary["lastFront"]:
        out.write("\n  Pareto front of the last step (predicted -> measured accuracy, time):\n")
        for row in summary["lastFront"]:
            predicted_time = _number(row["predictedTime"], "{:.2f}")
            out.write(
                f"    {_number(row['predictedAccuracy'])} -> {_number(row['accuracy'])}, "
                f"{predicted_time} -> {_number(row['trainingTime'], '{:.2f}')} s  {row['cell']}\n"
            )
    out.write(f"\n  results: {summary['location']}\n  summary: {location}\n")
    out.flush()
