"""The probe layer: a probe of a target and its runs, results, rows to samples, the probe history, reloads and the
exporter that holds them. It imports app.drivers and app.config, and knows nothing of HTTP."""
