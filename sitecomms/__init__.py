"""SiteComms: self-hosted, offline-first, real-time messaging for field teams.

`pip install sitecomms` is the client SDK (`sitecomms.client`, on `sitecomms.protocol`); the
server and the `sitecomms` command are the `server` extra (see `sitecomms.extras`). Importing
this package imports nothing else.
"""

__version__ = "0.1.0"
