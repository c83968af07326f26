"""HTTP handlers: parse the request, make one service call, render the response."""
