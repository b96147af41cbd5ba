// Host globals that are thin JS shells over native (Rust) functions. Evaluated once per realm;
// `native` is the object of Rust functions, which stays private to this closure.
(function (native) {
  "use strict";
  const g = globalThis;
  const define = (obj, name, value) =>
    Object.defineProperty(obj, name, { value, writable: true, configurable: true, enumerable: false });

  // --- console: Node's util.format subset ---------------------------------------------------
  const inspect = (v, depth, seen) => {
    switch (typeof v) {
      case "string": return depth === 0 ? v : "'" + v.replace(/'/g, "\\'") + "'";
      case "number": return Object.is(v, -0) ? "-0" : String(v);
      case "bigint": return String(v) + "n";
      case "symbol": return v.toString();
      case "undefined": return "undefined";
      case "function": return "[Function: " + (v.name || "(anonymous)") + "]";
      case "boolean": return String(v);
    }
    if (v === null) return "null";
    if (v instanceof Error) return v.stack ? String(v.name) + ": " + v.message + "\n" + v.stack.replace(/\n$/, "") : String(v);
    if (seen.includes(v)) return "[Circular *1]";
    if (depth > 2) return Array.isArray(v) ? "[Array]" : "[Object]";
    seen = seen.concat([v]);
    if (Array.isArray(v)) {
      if (v.length === 0) return "[]";
      return "[ " + v.map((x) => inspect(x, depth + 1, seen)).join(", ") + " ]";
    }
    if (v instanceof Uint8Array) return "Uint8Array(" + v.length + ") [ " + Array.from(v).join(", ") + " ]";
    const keys = Object.keys(v);
    const ctor = v.constructor && v.constructor !== Object && v.constructor.name ? v.constructor.name + " " : "";
    if (keys.length === 0) return ctor + "{}";
    const key = (k) => (/^[A-Za-z_$][\w$]*$/.test(k) ? k : "'" + k + "'");
    return ctor + "{ " + keys.map((k) => key(k) + ": " + inspect(v[k], depth + 1, seen)).join(", ") + " }";
  };
  const format = (args) => {
    let out = "";
    let i = 0;
    if (typeof args[0] === "string" && args.length > 1) {
      const f = args[0];
      i = 1;
      let last = 0;
      for (let j = 0; j < f.length - 1; j++) {
        if (f[j] !== "%") continue;
        const c = f[j + 1];
        let rep;
        if (c === "%") rep = "%";
        else if (i >= args.length) continue;
        else if (c === "s") rep = typeof args[i] === "string" ? args[i++] : inspect(args[i++], 1, []);
        else if (c === "d" || c === "i") rep = String(c === "i" ? parseInt(args[i++]) : Number(args[i++]));
        else if (c === "f") rep = String(parseFloat(args[i++]));
        else if (c === "j") rep = JSON.stringify(args[i++]);
        else if (c === "o" || c === "O") rep = inspect(args[i++], 1, []);
        else continue;
        out += f.slice(last, j) + rep;
        last = j + 2;
        j++;
      }
      out += f.slice(last);
    } else if (args.length > 0) {
      out = inspect(args[0], 0, []);
      i = 1;
    }
    for (; i < args.length; i++) out += " " + inspect(args[i], 0, []);
    return out + "\n";
  };
  const console = {};
  for (const name of ["log", "info", "debug"]) define(console, name, (...a) => native.print(1, format(a)));
  for (const name of ["error", "warn", "trace"]) define(console, name, (...a) => native.print(2, format(a)));
  define(g, "console", console);

  // --- TextEncoder / TextDecoder (UTF-8 only, like Node's defaults) --------------------------
  class TextEncoder {
    get encoding() { return "utf-8"; }
    encode(input = "") { return native.encodeUtf8(String(input)); }
    encodeInto(input, dest) {
      const bytes = native.encodeUtf8(String(input));
      let n = Math.min(bytes.length, dest.length);
      // Don't split a UTF-8 sequence.
      while (n > 0 && n < bytes.length && (bytes[n] & 0xc0) === 0x80) n--;
      dest.set(bytes.subarray(0, n));
      let read = 0;
      for (const ch of native.decodeUtf8(bytes.subarray(0, n))) read += ch.length;
      return { read, written: n };
    }
  }
  class TextDecoder {
    constructor(label = "utf-8", options = {}) {
      const l = String(label).trim().toLowerCase();
      if (l !== "utf-8" && l !== "utf8" && l !== "unicode-1-1-utf-8") {
        throw new RangeError("The \"" + label + "\" encoding is not supported");
      }
      this.fatal = !!options.fatal;
      this.ignoreBOM = !!options.ignoreBOM;
    }
    get encoding() { return "utf-8"; }
    decode(input) {
      if (input === undefined) return "";
      let bytes;
      if (input instanceof Uint8Array) bytes = input;
      else if (input instanceof ArrayBuffer) bytes = new Uint8Array(input);
      else if (ArrayBuffer.isView(input)) bytes = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
      else throw new TypeError("The \"input\" argument must be an instance of ArrayBuffer or ArrayBufferView");
      if (!this.ignoreBOM && bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) {
        bytes = bytes.subarray(3);
      }
      return native.decodeUtf8(bytes, this.fatal);
    }
  }
  define(g, "TextEncoder", TextEncoder);
  define(g, "TextDecoder", TextDecoder);

  // --- timers: Node's Timeout objects over the event loop's native timers ---------------------
  class Timeout {
    constructor(id) { define(this, "_id", id); }
    ref() { native.refTimer(this._id, true); return this; }
    unref() { native.refTimer(this._id, false); return this; }
    hasRef() { return native.hasRef(this._id); }
    refresh() { native.refreshTimer(this._id); return this; }
    close() { native.clearTimer(this._id); return this; }
    [Symbol.toPrimitive]() { return this._id; }
  }
  const delayOf = (d) => {
    d = Number(d);
    return d >= 1 && d <= 2147483647 ? d : 1;
  };
  const timerId = (t) => (t instanceof Timeout ? t._id : Number(t));
  const checkCallback = (fn) => {
    if (typeof fn !== "function") {
      const e = new TypeError("The \"callback\" argument must be of type function. Received " + inspect(fn, 1, []));
      e.code = "ERR_INVALID_ARG_TYPE";
      throw e;
    }
  };
  define(g, "setTimeout", function setTimeout(fn, delay, ...args) {
    checkCallback(fn);
    return new Timeout(native.setTimer(fn, delayOf(delay), args, false));
  });
  define(g, "setInterval", function setInterval(fn, delay, ...args) {
    checkCallback(fn);
    return new Timeout(native.setTimer(fn, delayOf(delay), args, true));
  });
  define(g, "setImmediate", function setImmediate(fn, ...args) {
    checkCallback(fn);
    return new Timeout(native.setTimer(fn, 0, args, false));
  });
  for (const name of ["clearTimeout", "clearInterval", "clearImmediate"]) {
    define(g, name, (t) => { if (t !== undefined && t !== null) native.clearTimer(timerId(t)); });
  }
  define(g, "queueMicrotask", function queueMicrotask(fn) {
    checkCallback(fn);
    native.queueMicrotask(fn);
  });

  // --- fs.Stats: the fields come from the host, the methods live here -------------------------
  const S_IFMT = 0o170000;
  class Stats {
    isDirectory() { return (this.mode & S_IFMT) === 0o040000; }
    isFile() { return (this.mode & S_IFMT) === 0o100000; }
    isSymbolicLink() { return (this.mode & S_IFMT) === 0o120000; }
    isBlockDevice() { return (this.mode & S_IFMT) === 0o060000; }
    isCharacterDevice() { return (this.mode & S_IFMT) === 0o020000; }
    isFIFO() { return (this.mode & S_IFMT) === 0o010000; }
    isSocket() { return (this.mode & S_IFMT) === 0o140000; }
    get atime() { return new Date(this.atimeMs); }
    get mtime() { return new Date(this.mtimeMs); }
    get ctime() { return new Date(this.ctimeMs); }
    get birthtime() { return new Date(this.birthtimeMs); }
  }
  define(g.fs, "Stats", Stats);
  native.statsPrototype = Stats.prototype;
})
