// A WatermelonDB 0.28 device (LokiJS adapter, in memory) syncing against `sitecomms serve` with
// the unmodified `synchronize()`: the original app's schema v5 tables, `pullChanges` and
// `pushChanges` as the WatermelonDB docs write them, plus the SiteComms bearer token.
// Usage: node watermelon_sync.cjs INPUT.json, INPUT = {base, scenario, tokens, ids}. Prints one JSON
// object: what the scenario saw, every console.error line (`errors`) and the local rows.
"use strict";

const fs = require("node:fs");
const { Database, Model, appSchema, tableSchema } = require("@nozbe/watermelondb");
const LokiJSAdapter = require("@nozbe/watermelondb/adapters/lokijs").default;
const { schemaMigrations } = require("@nozbe/watermelondb/Schema/migrations");
const { synchronize, hasUnsyncedChanges } = require("@nozbe/watermelondb/sync");

const input = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const SCENARIO_TIMEOUT_MS = 30000;
const REQUEST_TIMEOUT_MS = 10000;

const errors = [];
const originalError = console.error;
console.error = (...args) => {
  errors.push(args.map((a) => (a instanceof Error ? a.message : String(a))).join(" "));
};
console.warn = () => {}; // Loki's "IndexedDB unavailable" notes
console.log = () => {};

const schema = appSchema({
  version: 5,
  tables: [
    tableSchema({
      name: "conversations",
      columns: [
        { name: "server_id", type: "string", isIndexed: true },
        { name: "org_id", type: "string" },
        { name: "type", type: "string" },
        { name: "medic_id", type: "string", isOptional: true },
        { name: "last_message_at", type: "number", isOptional: true },
        { name: "participant_name", type: "string" },
        { name: "unread_count", type: "number" },
        { name: "last_read_at", type: "number", isOptional: true },
      ],
    }),
    tableSchema({
      name: "messages",
      columns: [
        { name: "server_id", type: "string", isIndexed: true },
        { name: "conversation_id", type: "string", isIndexed: true },
        { name: "sender_id", type: "string" },
        { name: "sender_name", type: "string" },
        { name: "content", type: "string" },
        { name: "status", type: "string" },
        { name: "idempotency_key", type: "string" },
        { name: "created_at", type: "number" },
      ],
    }),
  ],
});

class Conversation extends Model {
  static table = "conversations";
  static associations = { messages: { type: "has_many", foreignKey: "conversation_id" } };
}
class Message extends Model {
  static table = "messages";
  static associations = { conversations: { type: "belongs_to", key: "conversation_id" } };
}

function device() {
  const adapter = new LokiJSAdapter({
    schema,
    migrations: schemaMigrations({ migrations: [{ toVersion: 5, steps: [] }] }), // v4 -> v5: nothing for this test device
    useWebWorker: false,
    useIncrementalIndexedDB: false,
    extraLokiOptions: { autosave: false },
  });
  return new Database({ adapter, modelClasses: [Conversation, Message] });
}

async function request(method, path, token, body) {
  const response = await fetch(`${input.base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

// The app's sync: WatermelonDB's documented pullChanges/pushChanges, against SiteComms.
// `hooks.beforePush` / `hooks.afterPush` let a scenario act between the phases.
// With `ids.created_as_updated`, the app passes `sendCreatedAsUpdated: true` and says so to the server.
const createdAsUpdated = Boolean(input.ids.created_as_updated);

async function sync(database, token, hooks = {}) {
  const pushes = [];
  await synchronize({
    database,
    migrationsEnabledAtVersion: 5,
    sendCreatedAsUpdated: createdAsUpdated,
    pullChanges: async ({ lastPulledAt, schemaVersion, migration }) => {
      const query =
        `last_pulled_at=${lastPulledAt}&schema_version=${schemaVersion}` +
        `&migration=${encodeURIComponent(JSON.stringify(migration))}` +
        (createdAsUpdated ? "&send_created_as_updated=true" : "");
      const answer = await request("GET", `/v1/watermelon/sync?${query}`, token);
      if (answer.status !== 200) throw new Error(`pull ${answer.status}: ${JSON.stringify(answer.body)}`);
      const { changes, timestamp, ...rest } = answer.body;
      return { changes, timestamp, ...rest };
    },
    pushChanges: async ({ changes, lastPulledAt }) => {
      if (hooks.beforePush) await hooks.beforePush(changes, lastPulledAt);
      const answer = await request("POST", `/v1/watermelon/sync?last_pulled_at=${lastPulledAt}`, token, changes);
      pushes.push({ status: answer.status, body: answer.body, lastPulledAt });
      if (answer.status !== 200) throw new Error(`push ${answer.status}: ${JSON.stringify(answer.body)}`);
      if (hooks.afterPush) await hooks.afterPush(changes, lastPulledAt);
      return answer.body;
    },
  });
  return pushes;
}

async function rows(database) {
  const conversations = await database.get("conversations").query().fetch();
  const messages = await database.get("messages").query().fetch();
  return {
    conversations: conversations.map((r) => ({ ...r._raw })),
    messages: messages.map((r) => ({ ...r._raw })),
    unsynced: await hasUnsyncedChanges({ database }),
  };
}

let lastWritten = 0;
async function createMessage(database, conversationId, content) {
  lastWritten = Math.max(Date.now(), lastWritten + 1);
  const writtenAt = lastWritten;
  return database.write(() =>
    database.get("messages").create((m) => {
      m._setRaw("conversation_id", conversationId);
      m._setRaw("content", content);
      m._setRaw("status", "queued");
      m._setRaw("sender_id", input.ids.me);
      m._setRaw("created_at", writtenAt);
    }),
  );
}

async function failure(promise) {
  try {
    await promise;
    return null;
  } catch (error) {
    return error.message;
  }
}

const scenarios = {
  // First sync, incremental syncs, offline messages pushed across a crash, and a local delete.
  async offline(out) {
    const { ids, tokens } = input;
    const db = device();
    await sync(db, tokens.me);
    out.first = await rows(db);
    await request("POST", "/v1/messages", tokens.admin, {
      conversation_id: ids.direct,
      content: "from the office",
      idempotency_key: "office-1",
    });
    await sync(db, tokens.me);
    out.second = await rows(db);

    const offline = [];
    for (const content of ["offline one", "offline two"]) offline.push((await createMessage(db, ids.direct, content)).id);
    out.offline_ids = offline;
    let pushed = null;
    // The push reaches the server, then the app dies before WatermelonDB marks anything synced.
    out.crash = await failure(
      sync(db, tokens.me, {
        afterPush: async (changes, lastPulledAt) => {
          pushed = { changes, lastPulledAt };
          throw new Error("simulated crash after the push");
        },
      }),
    );
    out.after_crash = await rows(db);
    // Restarted, the app re-runs the very same push, then syncs normally (pull, merge, push again).
    const replay = await request(
      "POST",
      `/v1/watermelon/sync?last_pulled_at=${pushed.lastPulledAt}`,
      tokens.me,
      pushed.changes,
    );
    out.replay_status = replay.status;
    out.recovery_pushes = await sync(db, tokens.me);
    out.recovered = await rows(db);

    // Sent, then deleted on the device before the next pull (which carries its echo).
    const doomed = await createMessage(db, ids.direct, "deleted on the device");
    out.doomed_id = doomed.id;
    await sync(db, tokens.me);
    await db.write(() => doomed.markAsDeleted());
    await sync(db, tokens.me);
    await sync(db, tokens.me);
    out.final = await rows(db);
  },

  // The server changes a pushed conversation between the pull and the push: 409, then recovery.
  async conflict(out) {
    const { ids, tokens } = input;
    const db = device();
    await sync(db, tokens.me);
    const conversation = await db.get("conversations").find(ids.direct);
    await db.write(() =>
      conversation.update((c) => {
        c._setRaw("unread_count", 0);
        c._setRaw("last_read_at", Date.now());
      }),
    );
    await createMessage(db, ids.direct, "sent with the read");
    let interfered = false;
    const interfere = {
      beforePush: async () => {
        if (interfered) return;
        interfered = true;
        await request("POST", "/v1/messages", tokens.admin, {
          conversation_id: ids.direct,
          content: "between the pull and the push",
          idempotency_key: "between-1",
        });
      },
    };
    out.refused = await failure(sync(db, tokens.me, interfere));
    out.after_refusal = await rows(db);
    out.retry = await failure(sync(db, tokens.me, interfere)); // the app's "retry once"
    out.final = await rows(db);
  },

  // What a device receives is what the visibility rules allow; what it may not write stays local.
  async visibility(out) {
    const { ids, tokens } = input;
    const db = device();
    await sync(db, tokens.me);
    out.first = await rows(db);
    await request("POST", "/v1/messages", tokens.admin, {
      conversation_id: ids.stranger_direct,
      content: "for the other medic only",
      idempotency_key: "private-1",
    });
    await request("POST", "/v1/messages", tokens.admin, {
      conversation_id: ids.broadcast,
      content: "to every medic",
      idempotency_key: "broadcast-1",
    });
    await createMessage(db, ids.stranger_direct, "intrusion");
    await createMessage(db, ids.broadcast, "a medic may not broadcast");
    await createMessage(db, ids.other_org_direct, "across orgs");
    out.pushes = await sync(db, tokens.me);
    out.second = await rows(db);
    const admin = device();
    await sync(admin, tokens.admin);
    out.admin = await rows(admin);
  },

  // An admin's device while the admin is made a medic: the next pull replaces what it holds.
  async demotion(out) {
    const { ids, tokens } = input;
    const db = device();
    await sync(db, tokens.me);
    out.first = await rows(db);
    const demoted = await request("PUT", `/v1/users/${ids.me}/role`, tokens.admin, { role: "medic" });
    out.demoted = demoted.status;
    const signedIn = await fetch(`${input.base}/v1/auth/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email: ids.email, password: ids.password }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const token = (await signedIn.json()).access_token;
    await sync(db, token);
    out.second = await rows(db);
  },
};

async function main() {
  const timer = setTimeout(() => {
    process.stdout.write(JSON.stringify({ timeout: true, errors }) + "\n");
    process.exit(3);
  }, SCENARIO_TIMEOUT_MS);
  timer.unref();
  const out = {};
  try {
    await scenarios[input.scenario](out);
  } catch (error) {
    out.failed = `${error.message}\n${error.stack}`;
  }
  out.errors = errors;
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((error) => {
  originalError(error);
  process.exit(1);
});
