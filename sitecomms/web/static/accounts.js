// Accounts on the dashboard: the admins' Users view (the org's users, deactivated ones too,
// and what an admin can do to each: deactivate or reactivate, promote or demote, reset the
// password, see and sign out their devices), and everyone's "My account" (change my password,
// my devices). The Users view follows the realtime user.updated changes while it is open.
// Every text from the server goes in with textContent; every refusal is shown with the
// server's own message.

import { MIN_PASSWORD_CHARS, Role } from "./protocol.js";
import { api } from "./session.js";
import { $, button, el, relativeTime } from "./dom.js";

let host = { me: () => null };
const users = new Map(); // id -> UserView, while the Users view is open
let resetting = null;    // the user whose password the reset dialog sets

const DONE = { deactivate: "deactivated", reactivate: "reactivated", promote: "now an admin", demote: "now a medic" };
const roleName = (role) => (role === Role.ADMIN ? "Admin" : "Medic");
const isMe = (user) => host.me()?.user.id === user.id;

export function closeAccountViews() {
  for (const id of ["reset-password", "devices", "users", "account"]) if ($(id).open) $(id).close();
  users.clear();
}

// A user.updated change from the socket (a new user, a rename, a role, deactivated...).
export function userChanged(user) {
  if (!$("users").open) return;
  if (isMe(user) && user.role !== Role.ADMIN) { closeAccountViews(); return; }
  users.set(user.id, user);
  renderUsers();
}

// ---- the Users view (admins) ----------------------------------------------------------------

// Active users first, admins before medics, then by name: a deactivated or re-roled user moves.
function sortedUsers() {
  const rank = (u) => (u.active ? 0 : 2) + (u.role === Role.ADMIN ? 0 : 1);
  return [...users.values()].sort((a, b) => rank(a) - rank(b) || a.display_name.localeCompare(b.display_name));
}

async function openUsers() {
  say("users", "", "");
  try {
    const page = await api("GET", "/v1/users");
    users.clear();
    for (const user of page.users) users.set(user.id, user);
  } catch (error) { say("users", `Could not load the users: ${error.message}`); }
  renderUsers();
  if (!$("users").open) $("users").showModal();
}

function renderUsers() {
  const list = $("users-list");
  list.replaceChildren();
  for (const user of sortedUsers()) {
    const row = el("li", user.active ? "user" : "user inactive");
    row.dataset.id = user.id;
    const who = el("div", "who");
    who.append(el("span", "name", user.display_name), el("span", "email muted", user.email));
    const tags = el("div", "tags");
    tags.append(el("span", `tag role ${user.role}`, roleName(user.role)));
    if (!user.active) tags.append(el("span", "tag deactivated", "Deactivated"));
    if (isMe(user)) tags.append(el("span", "tag you", "You"));
    const actions = el("div", "actions");
    const name = user.display_name;
    actions.append(
      user.active
        ? action("Deactivate", "deactivate", name, () => change(user, "deactivate", "POST", `/v1/users/${user.id}/deactivate`))
        : action("Reactivate", "reactivate", name, () => change(user, "reactivate", "POST", `/v1/users/${user.id}/reactivate`)),
      user.role === Role.ADMIN
        ? action("Make medic", "demote", name, () => change(user, "demote", "PUT", `/v1/users/${user.id}/role`, { role: Role.MEDIC }))
        : action("Make admin", "promote", name, () => change(user, "promote", "PUT", `/v1/users/${user.id}/role`, { role: Role.ADMIN })),
      action("Reset password", "reset-password", name, () => openReset(user)),
      action("Devices", "devices", name, () => openDevices(user)),
    );
    row.append(who, tags, actions);
    list.append(row);
  }
}

function action(label, name, userName, onClick) {
  const node = button(label, "secondary small", onClick);
  node.dataset.action = name;
  node.setAttribute("aria-label", `${label}: ${userName}`);
  return node;
}

async function change(user, verb, method, path, body) {
  say("users", "", "");
  try {
    const updated = await api(method, path, body);
    users.set(updated.id, updated);
    renderUsers();
    say("users", "", `${updated.display_name}: ${DONE[verb]}.`);
  } catch (error) { say("users", `Could not ${verb} ${user.display_name}: ${error.message}`); }
}

function openReset(user) {
  resetting = user;
  $("reset-password-title").textContent = `New password for ${user.display_name}`;
  $("reset-password-form").reset();
  say("reset-password", "");
  $("reset-password").showModal();
}

async function submitReset(event) {
  event.preventDefault();
  const user = resetting;
  try {
    await api("POST", `/v1/users/${user.id}/password`, { password: $("reset-password-new").value });
    $("reset-password").close();
    say("users", "", `The password of ${user.display_name} was reset; their devices were signed out.`);
  } catch (error) { say("reset-password", error.message); }
}

// ---- devices: mine (in My account) and a user's (admins) ---------------------------------------

// One list of sessions. `owner` null: mine (GET /v1/sessions); else a user (admins).
function devicesPanel(prefix, owner) {
  const path = owner ? `/v1/users/${owner.id}/sessions` : "/v1/sessions";
  const load = async () => {
    try {
      const page = await api("GET", path);
      renderDevices(prefix, page.sessions, load);
    } catch (error) { say(prefix, `Could not load the devices: ${error.message}`); }
  };
  return load;
}

function renderDevices(prefix, sessions, reload) {
  const list = $(`${prefix}-list`);
  list.replaceChildren();
  if (!sessions.length) list.append(el("li", "muted", "No device is signed in."));
  for (const session of sessions) {
    const row = el("li", session.current ? "device current" : "device");
    row.dataset.id = session.id;
    const about = el("div", "who");
    about.append(el("span", "name", session.device || "Unnamed device"),
      el("span", "muted", `last used ${relativeTime(session.last_used_at)} from ${session.last_address} · signed in ${new Date(session.created_at).toLocaleString()}`));
    row.append(about);
    if (session.current) row.append(el("span", "tag you", "This device"));
    else {
      const out = button("Sign out", "secondary small", async () => {
        say(prefix, "", "");
        try { await api("DELETE", `/v1/sessions/${session.id}`); say(prefix, "", `${session.device}: signed out.`); }
        catch (error) { say(prefix, `Could not sign that device out: ${error.message}`); }
        await reload();
      });
      out.dataset.action = "sign-out";
      out.setAttribute("aria-label", `Sign out: ${session.device}`);
      row.append(out);
    }
    list.append(row);
  }
}

let reloadUserDevices = async () => {};
let userDevicesOwner = null;
async function openDevices(user) {
  userDevicesOwner = user;
  $("devices-title").textContent = `Devices of ${user.display_name}`;
  say("devices", "", "");
  $("devices-list").replaceChildren();
  reloadUserDevices = devicesPanel("devices", user);
  await reloadUserDevices();
  $("devices").showModal();
}

const reloadMyDevices = devicesPanel("my-devices", null);

async function signOutAll(prefix, path, reload) {
  say(prefix, "", "");
  try {
    const result = await api("DELETE", path);
    say(prefix, "", `${result.revoked} device${result.revoked === 1 ? "" : "s"} signed out.`);
  } catch (error) { say(prefix, `Could not sign the devices out: ${error.message}`); }
  await reload();
}

// ---- My account: change my password, my devices --------------------------------------------------

async function openAccount() {
  $("password-form").reset();
  say("password", "", "");
  say("my-devices", "", "");
  $("my-devices-list").replaceChildren();
  $("account").showModal();
  await reloadMyDevices();
}

async function submitPassword(event) {
  event.preventDefault();
  say("password", "", "");
  if ($("password-new").value !== $("password-repeat").value) { say("password", "The new passwords differ."); return; }
  try {
    await api("POST", "/v1/me/password", { current_password: $("password-current").value, new_password: $("password-new").value });
    $("password-form").reset();
    say("password", "", "Password changed; your other devices were signed out.");
    await reloadMyDevices();
  } catch (error) {
    say("password", error.status === 403 ? "The current password is wrong." : error.message);
  }
}

// ---- wiring ------------------------------------------------------------------------------------

// `${prefix}-error` (role=alert) and `${prefix}-status` (role=status) under each form or list.
function say(prefix, error, status) {
  $(`${prefix}-error`).textContent = error;
  if (status !== undefined && $(`${prefix}-status`)) $(`${prefix}-status`).textContent = status;
}

export function installAccounts(options) {
  host = options;
  $("users-open").addEventListener("click", openUsers);
  $("users-close").addEventListener("click", () => { $("users").close(); users.clear(); });
  $("reset-password-form").addEventListener("submit", submitReset);
  $("reset-password-cancel").addEventListener("click", () => $("reset-password").close());
  $("devices-close").addEventListener("click", () => $("devices").close());
  $("devices-sign-out-all").addEventListener("click", () =>
    signOutAll("devices", `/v1/users/${userDevicesOwner.id}/sessions`, reloadUserDevices));
  $("account-open").addEventListener("click", openAccount);
  $("account-close").addEventListener("click", () => $("account").close());
  $("password-form").addEventListener("submit", submitPassword);
  $("my-devices-sign-out-others").addEventListener("click", () =>
    signOutAll("my-devices", "/v1/sessions?keep_current=true", reloadMyDevices));
  for (const id of ["reset-password-new", "password-new", "password-repeat"]) $(id).minLength = MIN_PASSWORD_CHARS;
  for (const node of document.querySelectorAll(".min-password")) node.textContent = String(MIN_PASSWORD_CHARS);
}
