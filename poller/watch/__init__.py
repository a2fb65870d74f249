"""Watching sessions: one poll, one cycle over a Service, and the wall clock's steps."""
