"""The drivers layer: a target's engine, its connections and the statements sent on them, one dialect per kind of
server (MySQL/MariaDB, PostgreSQL, blocking drivers), kills and TLS. It imports app.config; probing imports it."""
