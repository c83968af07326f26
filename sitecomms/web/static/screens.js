// The page's screens and dialogs outside the main views: the sign-in screen, the switch to the
// signed-in app, the notice bar, the warning before signing out with unsent messages, and the
// admins' Add user dialog, and who has read a broadcast message. The form fields take the protocol's limits (the server enforces
// the same). Every text from the server goes in with textContent.

import { MAX_CONTENT_CHARS, MAX_DISPLAY_NAME_CHARS, MIN_PASSWORD_CHARS, Role } from "./protocol.js";
import { api } from "./session.js";
import { $, el, relativeTime } from "./dom.js";

const UNREACHABLE = "Cannot reach the server. Check the connection and try again.";

/** The sign-in screen, with `message` (why the user is here) if any. */
export function showLogin(message) {
  $("app").hidden = true;
  $("login").hidden = false;
  $("notice").hidden = true;
  $("login-error").textContent = message || "";
  $("login-email").focus();
}

/** The signed-in app (the views render once it is visible). */
export function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
}

export function showNotice(text) {
  $("notice-text").textContent = text;
  $("notice").hidden = false;
}

/** Asks before signing out with `count` unsent messages; resolves true to sign out anyway. */
export function confirmSignOut(count) {
  const dialog = $("sign-out-confirm");
  const one = count === 1;
  $("sign-out-confirm-text").textContent = `${count} ${one ? "message has" : "messages have"} not been sent. ` +
    `Signing out deletes ${one ? "it" : "them"} from this device.`;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "sign-out"), { once: true });
    dialog.showModal();
    $("sign-out-cancel").focus(); // the safe choice first
  });
}

/** Who has read a message: `load()` resolves to the server's ReceiptsView. */
export async function showReaders(load) {
  for (const id of ["readers-summary", "readers-error"]) $(id).textContent = "";
  $("readers-read").replaceChildren();
  $("readers-unread").replaceChildren();
  if (!$("readers").open) $("readers").showModal();
  try {
    const receipts = await load();
    $("readers-summary").textContent = `${receipts.read_count} of ${receipts.recipient_count} have read it.`;
    const row = (reader, when) => {
      const item = el("li");
      item.append(el("span", "name", reader.display_name));
      if (when) item.append(el("span", "muted", ` · ${relativeTime(when)}`));
      return item;
    };
    $("readers-read").append(...receipts.read.map((r) => row(r, r.last_read_at)));
    $("readers-unread").append(...receipts.unread.map((r) => row(r, null)));
  } catch (error) {
    $("readers-error").textContent = error instanceof TypeError ? UNREACHABLE : error.message;
  }
}

/** The sign-in form (`signIn(email, password)` rejects with the server's message) and Add user. */
export function installScreens({ signIn }) {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    try {
      await signIn($("login-email").value, $("login-password").value);
      $("login-password").value = "";
    } catch (error) {
      const message = error instanceof TypeError ? UNREACHABLE : error.message; // fetch: no network
      $("login-error").textContent = error.retryAfter ? `${message} (try again in ${error.retryAfter} s)` : message;
    }
  });
  $("readers-close").addEventListener("click", () => $("readers").close());
  $("add-user-open").addEventListener("click", () => { $("add-user-error").textContent = ""; $("add-user").showModal(); });
  $("add-user-cancel").addEventListener("click", () => $("add-user").close());
  $("add-user-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("POST", "/v1/users", { display_name: $("new-name").value, email: $("new-email").value,
        role: $("new-role").value, password: $("new-password").value });
      $("add-user-form").reset();
      $("add-user").close();
    } catch (error) { $("add-user-error").textContent = error.message; }
  });
  $("compose-text").maxLength = MAX_CONTENT_CHARS;
  $("new-name").maxLength = MAX_DISPLAY_NAME_CHARS;
  $("new-password").minLength = MIN_PASSWORD_CHARS;
  $("min-password").textContent = String(MIN_PASSWORD_CHARS);
  for (const [role, label] of [[Role.MEDIC, "Medic"], [Role.ADMIN, "Admin"]]) {
    const option = document.createElement("option");
    option.value = role;
    option.textContent = label;
    $("new-role").append(option);
  }
}
