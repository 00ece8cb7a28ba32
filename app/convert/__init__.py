"""sqlprobe-convert: targets.yml and queries.yml from a query-exporter or sql_exporter configuration."""
