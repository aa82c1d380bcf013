"""Serverless functions of the assistant backend: chat, compile, usage, refresh_views, health."""
