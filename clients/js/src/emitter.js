// A small event emitter: `on(type, fn)` returns its own unsubscribe function; "*" hears every event.
// A listener that throws is reported and does not stop the others (nor the client's read loop).

export class Emitter {
  constructor() {
    /** @type {Map<string, Set<(event: any) => void>>} */
    this._listeners = new Map();
  }

  /**
   * @param {string} type
   * @param {(event: any) => void} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => this.off(type, listener);
  }

  /**
   * @param {string} type
   * @param {(event: any) => void} listener
   */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /**
   * @param {string} type
   * @param {any} event
   * @param {boolean} [wildcard] also call the "*" listeners
   */
  emit(type, event, wildcard = false) {
    const lists = [this._listeners.get(type), wildcard ? this._listeners.get("*") : undefined];
    for (const set of lists) {
      if (!set) continue;
      for (const listener of [...set]) {
        try {
          listener(event);
        } catch (error) {
          reportListenerError(error);
        }
      }
    }
  }
}

/** @param {unknown} error */
function reportListenerError(error) {
  const report = /** @type {any} */ (globalThis).reportError;
  if (typeof report === "function") report(error);
  else console.error("realtime client: a listener threw", error);
}
