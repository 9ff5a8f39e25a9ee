"""The quality loop: gold tasks, annotator gating, benchmark mining, agreement, alerts."""
