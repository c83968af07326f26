"""The SiteComms offline-first client SDK.

    from sitecomms.client import Client

    client = await Client.open("http://127.0.0.1:8000", "maya.db")
    if client.me is None:
        await client.login("medic1@demo.example", "demo-password")
    await client.start()                      # sync, live updates and the outbox, in the background
    conversation = (await client.conversations())[0]
    await client.send(conversation.id, "Need more dressings")   # returns at once, status "queued"
    async for conversations in client.watch_conversations():    # re-yields after each local change
        ...
    await client.close()

Everything here works offline against the local store; the network only makes it current.
"""

from __future__ import annotations

from sitecomms.client._client import Client
from sitecomms.client._errors import (
    AuthenticationError,
    LocalStoreError,
    LocalStoreLocked,
    NotFound,
    RequestRejected,
    ServerUnavailable,
    SignedOut,
    SiteCommsError,
)
from sitecomms.client._models import ConnectionState, Conversation, Me, Message

__all__ = [
    "AuthenticationError",
    "Client",
    "ConnectionState",
    "Conversation",
    "LocalStoreError",
    "LocalStoreLocked",
    "Me",
    "Message",
    "NotFound",
    "RequestRejected",
    "ServerUnavailable",
    "SignedOut",
    "SiteCommsError",
]

for _name in __all__:
    globals()[_name].__module__ = "sitecomms.client"
