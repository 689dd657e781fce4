"""A read-only web view of the bucket's records (`invoke dashboard`): runs with their status,
phases and cost, a run's log, a sweep's tasks with its metric plotted against each param, a
job's metric across releases.

data: what each page shows, read through mlbatch.run.inspect and mlbatch.run.records from a
      bucket that refuses writes; plots: matplotlib SVG drawn on the server; render: Jinja2
      templates, one flat page name each; server: the loopback HTTP server and the export.
Needs the `dashboard` extra (jinja2, matplotlib); no script, no CDN.
"""
