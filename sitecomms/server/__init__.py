"""The SiteComms server: `create_app(settings)` builds and wires everything (see `app`)."""
