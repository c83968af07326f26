"""Sizes and bounds that server and clients both enforce."""

MAX_CONTENT_CHARS = 4000
PREVIEW_CHARS = 100
MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_DISPLAY_NAME_CHARS = 100
MAX_ORG_NAME_CHARS = 200
MAX_EMAIL_CHARS = 254
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024

THREAD_PAGE_DEFAULT = 50
THREAD_PAGE_MAX = 200
SYNC_PAGE_DEFAULT = 500
SYNC_PAGE_MAX = 1000
AUDIT_PAGE_DEFAULT = 50
AUDIT_PAGE_MAX = 200
INITIAL_SYNC_MESSAGES_PER_CONVERSATION = 100

# Web Push: a push's text (when pushes carry it) is at most this long, which keeps the encrypted
# payload well inside the 4 KB push services accept; each user has at most this many devices
# with notifications; an endpoint URL is at most this long.
PUSH_TEXT_CHARS = 200
PUSH_DEVICES_PER_USER = 20
MAX_PUSH_ENDPOINT_CHARS = 2048
