// The original web app's supabase-js pattern against `sitecomms serve`, unmodified client.
//
// Driven by tests/compat/test_supabase_js.py, which starts the server, makes the org and its
// users, passes them in SCENARIO (JSON), and restarts the server when this script prints
// {"need": "restart"} (it answers "restarted" on stdin). Every wait has a timer that fails the
// run; the last line is {"result": "ok"} or {"result": "fail", "error": ...}.
import { createRequire } from 'node:module'
import readline from 'node:readline'

const require = createRequire(import.meta.url)
const cfg = JSON.parse(process.env.SCENARIO)
const { createClient } = require(cfg.pkg)
const WebSocket = require('ws')
const modern = cfg.pkg === '@supabase/supabase-js'
const WAIT = 10_000

const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const stdin = readline.createInterface({ input: process.stdin })
const lines = []
let lineWaiter = null
stdin.on('line', (line) => {
  lines.push(line)
  if (lineWaiter) lineWaiter()
})

function fail(message) {
  throw new Error(message)
}
function check(condition, message) {
  if (!condition) fail(message)
}

function within(ms, promise, what) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

async function nextLine(what) {
  return within(60_000, new Promise((resolve) => {
    const take = () => { if (lines.length) { lineWaiter = null; resolve(lines.shift()) } }
    lineWaiter = take
    take()
  }), what)
}

class Events {
  constructor(name) { this.name = name; this.items = []; this.waiters = [] }
  push(item) {
    this.items.push(item)
    for (const w of [...this.waiters]) w()
  }
  wait(pred, what, ms = WAIT) {
    return within(ms, new Promise((resolve) => {
      const test = () => {
        const found = this.items.find(pred)
        if (found) { this.waiters = this.waiters.filter((w) => w !== test); resolve(found) }
      }
      this.waiters.push(test)
      test()
    }), `${this.name}: ${what} (seen: ${JSON.stringify(this.items).slice(-1500)})`)
  }
  count(pred) { return this.items.filter(pred).length }
  inserts() { return this.items.filter((e) => e.kind === 'insert').map((e) => e.p.new.content) }
}

const pushes = new Map() // client -> the realtime pushes it logged: [topic event, payload]
function client(storage) {
  const log = []
  const logger = (kind, msg, data) => {
    if (kind === 'push') log.push([msg, data])
    if (process.env.SCENARIO_DEBUG) console.log('LOG', kind, msg, JSON.stringify(data))
  }
  const c = createClient(cfg.url, cfg.anon, {
    auth: storage
      ? { storage, persistSession: true, autoRefreshToken: false, detectSessionInUrl: false }
      : { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { ...(modern ? { transport: WebSocket } : {}), logger },
  })
  pushes.set(c, log)
  return c
}

async function signIn(c, who) {
  const { data, error } = await within(WAIT, c.auth.signInWithPassword({ email: who.email, password: cfg.password }), 'sign-in')
  check(!error, `sign-in failed: ${error && error.message}`)
  check(data.user.id === who.id, `signed in as ${data.user.id}, not ${who.id}`)
  check(typeof data.session.expires_at === 'number' && data.session.expires_in > 0, 'session expiry')
  return data.session
}

function subscribe(c, who, name, { resume = false } = {}) {
  const events = new Events(name)
  const broadcast = resume ? { ack: false, self: false, resume_cursor: null } : undefined
  const channel = c.channel(`user-${who.id}:org_${who.org_id}`, broadcast ? { config: { broadcast } } : undefined)
  const keep = (p) => { if (broadcast && p.new && p.new.cursor) broadcast.resume_cursor = p.new.cursor }
  channel
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'messages', filter: `org_id=eq.${who.org_id}` },
      (p) => { keep(p); events.push({ kind: 'insert', p }) })
    .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'conversation_read_status', filter: `org_id=eq.${who.org_id}` },
      (p) => { keep(p); events.push({ kind: 'read', p }) })
  if (modern) channel.on('system', {}, (p) => events.push({ kind: 'system', p }))
  channel.subscribe((status, err) => events.push({ kind: 'status', status, err: err ? String(err.message || err) : null }))
  return { channel, events, broadcast }
}

async function rest(token, method, path, body) {
  const response = await within(WAIT, fetch(cfg.url + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  }), `${method} ${path}`)
  if (!response.ok) fail(`${method} ${path}: ${response.status} ${await response.text()}`)
  return response.json()
}
let keys = 0
const send = (token, conversation_id, content) =>
  rest(token, 'POST', '/v1/messages', { conversation_id, content, idempotency_key: `k-${process.pid}-${keys++}` })
const markRead = (token, conversation) => rest(token, 'POST', `/v1/conversations/${conversation}/read`)

const subscribed = (n) => (e) => e.kind === 'status' && e.status === 'SUBSCRIBED' && --n <= 0
const inserted = (content) => (e) => e.kind === 'insert' && e.p.new.content === content

async function main() {
  const medic = client()
  const admin = client()
  const medicB = client()
  const other = client()
  const anon = client()

  // --- GoTrue: sign-in, a wrong password, the user -----------------------------------------
  const medicSession = await signIn(medic, cfg.medic)
  const adminSession = await signIn(admin, cfg.admin)
  const medicBSession = await signIn(medicB, cfg.medicB)
  const otherSession = await signIn(other, cfg.other)
  const wrong = await within(WAIT, anon.auth.signInWithPassword({ email: cfg.medicB.email, password: 'not the password' }), 'wrong password')
  check(wrong.error && wrong.error.status === 400 && wrong.error.code === 'invalid_credentials',
    `wrong password: ${JSON.stringify(wrong.error)}`)
  const me = await within(WAIT, medic.auth.getUser(), 'getUser')
  check(!me.error && me.data.user.id === cfg.medic.id && me.data.user.email === cfg.medic.email, 'getUser')
  say({ step: 'signed in' })

  // --- the original app's channel -------------------------------------------------------
  // realtime-js 2.11 (supabase-js 2.49) joins with the anon key unless the token is set
  // first (P1); the server refuses anon joins, so such an app calls setAuth() once after
  // sign-in (docs/migrating-from-supabase.md). The current client needs nothing.
  // realtime-js 2.11 (supabase-js 2.49) joins with the anon key as its token, even after
  // sign-in, unless setAuth() is called first; the current client needs nothing
  // (docs/migrating-from-supabase.md)
  if (!modern) for (const c of [medic, admin, other]) await within(WAIT, c.realtime.setAuth(), 'setAuth')
  const m = subscribe(medic, cfg.medic, 'medic', { resume: true })
  const a = subscribe(admin, cfg.admin, 'admin')
  const o = subscribe(other, cfg.other, 'other org')
  for (const c of [m, a, o]) {
    await c.events.wait(subscribed(1), 'SUBSCRIBED')
    const first = c.events.items.filter((e) => e.kind === 'status').map((e) => e.status).join()
    check(first === 'SUBSCRIBED', `${c.events.name} statuses ${first}`)
  }
  if (modern) await m.events.wait((e) => e.kind === 'system' && e.p.message === 'Subscribed to PostgreSQL', 'system ok')
  say({ step: 'subscribed' })

  // what must never reach the medic (another medic's, another org's) goes first
  await send(otherSession.access_token, cfg.other.broadcast_id, 'other-org-secret')
  await o.events.wait(inserted('other-org-secret'), 'its own org message')
  await send(medicBSession.access_token, cfg.medicB.conversation_id, 'medicB-secret')
  await a.events.wait(inserted('medicB-secret'), "medic B's message")
  await send(medicSession.access_token, cfg.medic.conversation_id, 'medic-hello')
  const adminGot = await a.events.wait(inserted('medic-hello'), "the medic's message")
  await m.events.wait(inserted('medic-hello'), 'own message')
  await send(adminSession.access_token, cfg.broadcast_id, 'admin-broadcast')
  const medicGot = await m.events.wait(inserted('admin-broadcast'), 'the broadcast')
  const adminOwn = await a.events.wait(inserted('admin-broadcast'), 'the broadcast')

  const record = medicGot.p.new
  const expected = ['id', 'org_id', 'conversation_id', 'sender_id', 'sender_name', 'sender_role', 'content', 'status',
    'idempotency_key', 'created_at', 'position', 'cursor']
  check(JSON.stringify(Object.keys(record).sort()) === JSON.stringify([...expected].sort()), `record keys ${Object.keys(record)}`)
  check(record.sender_name === 'Admin' && adminOwn.p.new.sender_name === cfg.admin.display_name, 'names as each sees them')
  check(record.org_id === cfg.medic.org_id && record.conversation_id === cfg.broadcast_id && record.status === 'sent', 'record values')
  check(typeof record.position === 'number' && !Number.isNaN(Date.parse(record.created_at)), 'typed columns')
  check(medicGot.p.eventType === 'INSERT' && medicGot.p.table === 'messages' && medicGot.p.schema === 'public', 'payload')
  check(!('cursor' in adminGot.p.new), 'no cursor without the resume option')
  check(adminGot.p.new.sender_id === cfg.medic.id && adminGot.p.new.sender_name === cfg.medic.display_name, 'admin sees the medic')
  for (const secret of ['medicB-secret', 'other-org-secret']) {
    check(!m.events.inserts().includes(secret), `the medic saw ${secret}`)
  }
  check(!a.events.inserts().includes('other-org-secret'), 'the admin saw another org')
  say({ step: 'inserts' })

  // --- read status UPDATE --------------------------------------------------------------
  await markRead(medicBSession.access_token, cfg.broadcast_id)
  await a.events.wait((e) => e.kind === 'read' && e.p.new.user_id === cfg.medicB.id, "medic B's read status")
  await markRead(adminSession.access_token, cfg.medic.conversation_id)
  const read = await m.events.wait((e) => e.kind === 'read' && e.p.new.user_id === cfg.admin.id, "the admin's read status")
  check(read.p.eventType === 'UPDATE' && read.p.new.conversation_id === cfg.medic.conversation_id, 'read status record')
  await markRead(medicSession.access_token, cfg.broadcast_id)
  await a.events.wait((e) => e.kind === 'read' && e.p.new.user_id === cfg.medic.id, "the medic's read status")
  await m.events.wait((e) => e.kind === 'read' && e.p.new.user_id === cfg.medic.id, 'own read status')
  check(!m.events.items.some((e) => e.kind === 'read' && e.p.new.user_id === cfg.medicB.id), "the medic saw medic B's read status")
  say({ step: 'read status' })

  // --- an anon-only join: refused, then not retried -------------------------------------------
  // supabase-js 2.109 joins first with no token at all (it may still be restoring a session,
  // below), which gets a bare error reply; its rejoin carries the anon key and is refused for
  // good. 2.49 sends the anon key at once.
  const n = subscribe(anon, { id: 'anon', org_id: cfg.medic.org_id }, 'anon')
  await n.events.wait((e) => e.kind === 'status' && e.status === 'CLOSED', 'CLOSED after the refusal')
  await new Promise((resolve) => setTimeout(resolve, 2500)) // a further retry would come within 2 s
  const statuses = n.events.items.filter((e) => e.kind === 'status').map((e) => e.status)
  const refusals = modern ? ['CHANNEL_ERROR', 'CHANNEL_ERROR', 'CLOSED'] : ['CHANNEL_ERROR', 'CLOSED']
  check(JSON.stringify(statuses) === JSON.stringify(refusals), `anon statuses ${statuses}`)
  const refusal = n.events.items.find((e) => e.kind === 'status' && e.status === 'CHANNEL_ERROR')
  check(/access token is required/.test(refusal.err || ''), `anon reason: ${JSON.stringify(n.events.items)}`)
  say({ step: 'anon refused' })

  // --- a session restored from storage, subscribed right after createClient (pitfall P1) -----
  const stored = new Map()
  const storage = { getItem: (k) => stored.get(k) ?? null, setItem: (k, v) => { stored.set(k, v) }, removeItem: (k) => { stored.delete(k) } }
  await signIn(client(storage), cfg.medicB)
  check(stored.size > 0, 'the session was stored')
  const restored = client(storage)
  if (!modern) await within(WAIT, restored.realtime.setAuth(), 'setAuth')
  const r = subscribe(restored, cfg.medicB, 'restored')
  await r.events.wait(subscribed(1), 'SUBSCRIBED with the restored session')
  const early = r.events.items.filter((e) => e.kind === 'status').map((e) => e.status)
  check(['SUBSCRIBED', 'CHANNEL_ERROR,SUBSCRIBED'].includes(early.join()), `restored statuses ${early}`)
  await send(adminSession.access_token, cfg.broadcast_id, 'to-the-restored')
  await r.events.wait(inserted('to-the-restored'), 'the broadcast on the restored session')
  say({ step: 'restored session' })

  // --- token refresh on a live channel ------------------------------------------------------
  const since = a.events.items.length
  const refreshed = await within(WAIT, admin.auth.refreshSession(), 'refreshSession')
  check(!refreshed.error && refreshed.data.session.access_token !== adminSession.access_token, 'a new token')
  check(refreshed.data.session.refresh_token !== adminSession.refresh_token, 'a new refresh token')
  const token = refreshed.data.session.access_token
  // supabase-js 2.109 pushes the new token at once; 2.49 with its next heartbeat (every 25 s),
  // or at once on setAuth()
  if (!modern) await within(WAIT, admin.realtime.setAuth(), 'setAuth')
  await within(WAIT, new Promise((resolve) => {
    const seen = () => pushes.get(admin).some(([msg, data]) => /access_token/.test(msg) && JSON.stringify(data).includes(token))
    const poll = setInterval(() => { if (seen()) { clearInterval(poll); resolve() } }, 20)
  }), `the access_token push with the new token (pushes: ${JSON.stringify(pushes.get(admin).map(([m]) => m))})`)
  await send(medicSession.access_token, cfg.medic.conversation_id, 'after-refresh')
  await a.events.wait(inserted('after-refresh'), 'a message after the refresh')
  check(!a.events.items.slice(since).some((e) => e.kind === 'status'), 'the admin channel stayed joined')
  say({ step: 'refreshed' })

  // --- a server restart: both rejoin; the resuming one misses nothing ------------------------
  say({ need: 'restart' })
  check((await nextLine('the restart')) === 'restarted', 'restart')
  await m.events.wait(subscribed(2), 'SUBSCRIBED again', 30_000)
  await a.events.wait(subscribed(2), 'SUBSCRIBED again', 30_000)
  await m.events.wait(inserted('missed-2'), 'the replayed messages')
  await send(adminSession.access_token, cfg.broadcast_id, 'after-restart')
  await m.events.wait(inserted('after-restart'), 'live after the restart')
  await a.events.wait(inserted('after-restart'), 'live after the restart')
  const seen = m.events.inserts()
  check(JSON.stringify(seen.slice(-3)) === JSON.stringify(['missed-1', 'missed-2', 'after-restart']), `medic after restart: ${seen}`)
  check(!a.events.inserts().some((c) => c.startsWith('missed-')), 'without resume nothing is replayed (Supabase)')
  say({ step: 'restart' })

  // --- signing out (a revoked session) closes the channel ---------------------------------
  check(m.events.count((e) => e.kind === 'status' && e.status === 'CLOSED') === 0, 'the medic channel was open')
  await within(WAIT, medic.auth.signOut(), 'signOut')
  await m.events.wait((e) => e.kind === 'status' && e.status === 'CLOSED', 'CLOSED on sign-out')
  const afterOut = await within(WAIT, rest(adminSession.access_token, 'GET', '/v1/me').then(() => 'ok'), 'admin still in')
  check(afterOut === 'ok', 'admin')
  say({ step: 'signed out' })

  for (const c of [medic, admin, medicB, other, anon, restored]) await c.removeAllChannels()
}

main().then(
  () => { say({ result: 'ok' }); process.exit(0) },
  (error) => { say({ result: 'fail', error: String(error && error.stack || error) }); process.exit(1) },
)
