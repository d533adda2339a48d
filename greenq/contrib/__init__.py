"""Glue between greenq and the programs that embed it (`greenq.contrib.gunicorn`:
server hooks for gunicorn's gevent workers). Nothing here is imported by
greenq itself."""
