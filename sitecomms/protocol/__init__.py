"""The wire vocabulary shared by the server and the client SDK (stdlib only).

Everything a client and the server must agree on lives here: the enums, the limits, the
error codes, the opaque cursor format and the shapes of what travels over HTTP.
"""
