"""Business rules: accounts, messaging, sync. No web imports; storage through `sitecomms.store`."""
