// A scriptable stand-in for the server (ws), for client behaviours that need a misbehaving peer:
// silence, abrupt closes, refusals, seq gaps, resumes that replay too much. Speaks the real codec.
import { WebSocketServer } from "ws";

import { SUBPROTOCOLS, decodeEvent, encodeEvent } from "../../src/codec.js";

/**
 * @typedef {{
 *   ws: import("ws").WebSocket,
 *   encoding: "msgpack" | "json",
 *   request: import("node:http").IncomingMessage,
 *   received: any[],
 *   seq: number,
 *   session: () => Record<string, unknown>,
 *   send: (fields: Record<string, unknown>) => void,
 *   sendRaw: (data: Uint8Array | string) => void,
 *   next: (type?: string) => Promise<any>,
 * }} FakeLink
 */

/**
 * @param {{
 *   onConnect?: (link: FakeLink, index: number) => void | Promise<void>,
 *   refuse?: (request: import("node:http").IncomingMessage) => number | null,
 *   onResume?: (link: FakeLink, resume: {sessionId: string, secret: string, lastSeq: number}) => void | Promise<void>,
 *   session?: Record<string, unknown>,
 *   answerSessionUpdate?: boolean,
 * }} [options] onConnect runs after session.created is sent; refuse returns an HTTP status to refuse with;
 *   onResume, when given, takes a connection that asks for a resume instead (no session.created is sent)
 */
export async function startFakeServer(options = {}) {
  const { answerSessionUpdate = true } = options;
  /** @type {FakeLink[]} */
  const links = [];
  /** @type {Array<(link: FakeLink) => void>} */
  const linkWaiters = [];
  const wss = new WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    handleProtocols: (protocols) => {
      for (const p of protocols) if (Object.values(SUBPROTOCOLS).includes(p)) return p;
      return false;
    },
    verifyClient: (info, done) => {
      const status = options.refuse?.(info.req) ?? null;
      if (status) done(false, status, "refused");
      else done(true);
    },
  });
  await new Promise((resolve) => wss.once("listening", resolve));
  const port = /** @type {import("node:net").AddressInfo} */ (wss.address()).port;
  let sessions = 0;

  wss.on("connection", (ws, request) => {
    const encoding = ws.protocol === SUBPROTOCOLS.json ? "json" : "msgpack";
    /** @type {Array<{type?: string, resolve: (e: any) => void}>} */
    const waiters = [];
    /** @type {FakeLink} */
    const link = {
      ws,
      encoding,
      request,
      received: [],
      seq: 0,
      session: () => ({}),
      send(fields) {
        link.seq++;
        const { type, ...rest } = fields;
        ws.send(encodeEvent({ type, event_id: `evt_${link.seq}`, seq: link.seq, ...rest }, encoding));
      },
      sendRaw(data) {
        ws.send(data);
      },
      next(type) {
        const index = link.received.findIndex((e) => !e._taken && (!type || e.type === type));
        if (index >= 0) {
          link.received[index]._taken = true;
          return Promise.resolve(link.received[index]);
        }
        return new Promise((resolve) => waiters.push({ type, resolve }));
      },
    };
    ws.on("message", (data, isBinary) => {
      const event = decodeEvent(isBinary ? /** @type {Buffer} */ (data) : data.toString(), encoding);
      link.received.push(event);
      if (event.type === "session.update" && answerSessionUpdate) {
        link.send({ type: "session.updated", session: { ...session(), ...event.session } });
      }
      const i = waiters.findIndex((w) => !w.type || w.type === event.type);
      if (i >= 0) {
        event._taken = true;
        waiters.splice(i, 1)[0].resolve(event);
      }
    });
    sessions++;
    const session = () => ({
      id: `sess_${String(sessions).padStart(16, "0")}`,
      user: "fake",
      protocol: "v1",
      encoding,
      ping_interval_ms: 10_000,
      ping_timeout_ms: 30_000,
      ...(options.session ?? {}),
    });
    link.session = session;
    const query = new URL(request.url ?? "/", "http://x").searchParams;
    const resume = query.get("resume");
    links.push(link);
    for (const waiter of linkWaiters.splice(0)) waiter(link);
    if (resume !== null && options.onResume) {
      void options.onResume(link, { sessionId: resume, secret: query.get("resume_secret") ?? "", lastSeq: Number(query.get("last_seq")) });
      return;
    }
    link.send({ type: "session.created", session: session() });
    void options.onConnect?.(link, links.length - 1);
  });

  return {
    url: `ws://127.0.0.1:${port}/ws`,
    links,
    /** The n-th connection (0-based), when it arrives. @param {number} n @returns {Promise<FakeLink>} */
    link(n) {
      if (links[n]) return Promise.resolve(links[n]);
      return new Promise((resolve) => {
        const check = () => {
          if (links[n]) resolve(links[n]);
          else linkWaiters.push(check);
        };
        linkWaiters.push(check);
      });
    },
    async close() {
      for (const client of wss.clients) client.terminate();
      await new Promise((resolve) => wss.close(resolve));
    },
  };
}
