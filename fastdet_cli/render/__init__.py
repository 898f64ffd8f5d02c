"""Renderers: tables, Markdown, CSV and plots made from typed results (bench.report.BenchReport…); the commands
print them, api.py writes their files."""
