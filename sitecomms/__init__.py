"""SiteComms: self-hosted, offline-first, real-time messaging for field teams."""

__version__ = "0.1.0"
