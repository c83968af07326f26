"""The realtime channel: one WebSocket per signed-in client (protocol in docs/realtime.md)."""
