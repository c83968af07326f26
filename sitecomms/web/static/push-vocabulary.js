// TEMPORARY (issue 13): the push payload's vocabulary until the generated protocol.js carries
// it (`PushKind`, `PUSH_TEXT_CHARS` from sitecomms.protocol); then notices.js imports them from
// ./protocol.js and this file goes.

export const PushKind = Object.freeze({
  MESSAGE: "message",
});

export const PUSH_TEXT_CHARS = 200;
