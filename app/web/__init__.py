"""The web layer: the ASGI app and its endpoints (/probe, the status page, /logs, /sd, /metrics), the HTTP protocol,
basic auth and web-config, exposition and the debug report. It imports app.probe and below."""
