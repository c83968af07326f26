"""`sitecomms bench`: start a server, drive it over HTTP and WebSocket from 127.0.0.1, report.

The benchmark is a client like any other: it never imports the server, the store or the bus.
"""
