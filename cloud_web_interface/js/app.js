// Shared by every page: the operator's session (API token), calls to the gateway's API,
// the page header, status messages and small DOM helpers.
//
// The token lives in sessionStorage (this tab only; memory when storage is unavailable) and
// travels only in the Authorization header, never in a URL.

const TOKEN_KEY = "agata.apiToken";
let memoryToken = null;
const timers = new Set();

export const NAV = [
  ["index.html", "Dashboard"],
  ["create.html", "Create task"],
  ["start.html", "Start"],
  ["stop.html", "Stop"],
  ["update.html", "Update"],
  ["upload.html", "Upload files"],
  ["enroll.html", "Enroll device"],
];

// -- DOM helpers ----------------------------------------------------------------------------

/** Create an element: el("a", {href: "x", class: "y"}, "text", child...). Text is never HTML. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2).toLowerCase(), value);
    } else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function byId(id) {
  return document.getElementById(id);
}

/** A query parameter of the page URL (only ids; never the token). */
export function param(name) {
  return new URLSearchParams(window.location.search).get(name);
}

export function taskUrl(id) {
  return `task.html?id=${encodeURIComponent(id)}`;
}

/** A task's server address: host:port, or the host alone when the task has no port. */
export function endpoint(task) {
  return task.port === null || task.port === undefined ? task.host : `${task.host}:${task.port}`;
}

export function clientUrl(id) {
  return `client.html?id=${encodeURIComponent(id)}`;
}

/** Times from the API are UTC; a value without an offset is read as UTC too. */
export function parseTime(value) {
  if (!value) return null;
  const text = /([zZ]|[+-]\d\d:?\d\d)$/.test(value) ? value : `${value}Z`;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function relativeTime(date, now = new Date()) {
  const seconds = Math.round((now.getTime() - date.getTime()) / 1000);
  const past = seconds >= 0;
  const s = Math.abs(seconds);
  let text;
  if (s < 5) return "just now";
  if (s < 60) text = `${s} s`;
  else if (s < 3600) text = `${Math.floor(s / 60)} min`;
  else if (s < 86400) text = `${Math.floor(s / 3600)} h`;
  else text = `${Math.floor(s / 86400)} d`;
  return past ? `${text} ago` : `in ${text}`;
}

/** A <time> element: relative text, the full local time as its title. */
export function timeElement(value, { relative = true } = {}) {
  const date = parseTime(value);
  if (!date) return el("span", { class: "muted" }, "—");
  const full = date.toLocaleString();
  return el(
    "time",
    { datetime: date.toISOString(), title: full },
    relative ? `${relativeTime(date)} (${full})` : full,
  );
}

export function statusBadge(status) {
  return el("span", { class: "badge", dataset: { status } }, status);
}

export function formatNumber(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return String(Number(value.toPrecision(digits)));
}

export function formatBytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

export function chips(values) {
  if (!values || values.length === 0) return el("span", { class: "muted" }, "none");
  return el("ul", { class: "chips" }, values.map((v) => el("li", {}, v)));
}

// -- status messages --------------------------------------------------------------------

/** Show a message in the page's aria-live status region (kind: info, ok, error). */
export function announce(message, kind = "info") {
  const region = byId("status");
  if (!region) return;
  region.textContent = "";
  region.dataset.kind = kind;
  // A fresh text node makes screen readers announce the same message again.
  window.setTimeout(() => {
    region.textContent = message;
  }, 20);
}

export function clearAnnouncement() {
  const region = byId("status");
  if (region) region.textContent = "";
}

const FLASH_KEY = "agata.flash";

/** A message for the next page this tab shows (e.g. "Task created" after a redirect). */
export function flash(message, kind = "ok") {
  try {
    window.sessionStorage.setItem(FLASH_KEY, JSON.stringify({ message, kind }));
  } catch {
    // no storage: the next page simply shows no message
  }
}

function showFlash() {
  try {
    const raw = window.sessionStorage.getItem(FLASH_KEY);
    window.sessionStorage.removeItem(FLASH_KEY);
    if (raw) {
      const { message, kind } = JSON.parse(raw);
      announce(message, kind);
    }
  } catch {
    // nothing to show
  }
}

// -- session ----------------------------------------------------------------------------

export function getToken() {
  try {
    return window.sessionStorage.getItem(TOKEN_KEY) || memoryToken;
  } catch {
    return memoryToken;
  }
}

function setToken(token) {
  memoryToken = token;
  try {
    window.sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // storage disabled: the token stays in memory for this page only
  }
}

function clearToken() {
  memoryToken = null;
  try {
    window.sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // nothing stored
  }
}

// -- API ----------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && (body.exception || body.message)) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body || {};
  }

  /** Field problems the server named: [{field, message}]. */
  get fieldErrors() {
    return Array.isArray(this.body.errors) ? this.body.errors : [];
  }
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    return { exception: text.slice(0, 300) };
  }
}

async function send(path, { method = "GET", json, form } = {}) {
  const token = getToken();
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store", credentials: "omit" });
  } catch {
    throw new ApiError(0, { exception: "The gateway did not answer; check that it is running." });
  }
  if (response.status === 401) {
    const data = await readBody(response);
    signedOut("The gateway refused the token (it may have changed). Sign in again.");
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, await readBody(response));
  return response;
}

/**
 * Call the gateway's API with the operator's token.
 * options: method, json (a body to send as JSON), form (a FormData to send as multipart).
 * Resolves with the parsed JSON; rejects with ApiError (status 0 = no answer).
 */
export async function api(path, options = {}) {
  return readBody(await send(path, options));
}

/** GET a file with the operator's token; resolves with its Blob (rejects like api). */
export async function apiBlob(path) {
  return (await send(path)).blob();
}

let schemasPromise = null;

/** JSON Schemas of every RPC request, by RPC name (public: GET /api/schemas). */
export function getSchemas() {
  if (!schemasPromise) {
    schemasPromise = fetch("/api/schemas", { cache: "no-store", credentials: "omit" }).then(
      async (response) => {
        if (!response.ok) throw new ApiError(response.status, await readBody(response));
        return response.json();
      },
    );
    schemasPromise.catch(() => {
      schemasPromise = null;
    });
  }
  return schemasPromise;
}

/**
 * Run fn now and then every ms milliseconds until stopped or the operator signs out.
 * fn gets the timer; timer.setInterval(ms) changes the pace (a shorter one applies at once).
 */
export function every(ms, fn) {
  let stopped = false;
  let busyNow = false;
  let handle = null;
  let failing = false;
  const schedule = () => {
    if (handle !== null) window.clearTimeout(handle);
    handle = stopped ? null : window.setTimeout(tick, ms);
  };
  const timer = {
    stop() {
      stopped = true;
      if (handle !== null) window.clearTimeout(handle);
      handle = null;
      timers.delete(timer);
    },
    setInterval(next) {
      const sooner = next < ms;
      ms = next;
      if (sooner && !busyNow) schedule();
    },
  };
  async function tick() {
    handle = null;
    if (stopped) return;
    busyNow = true;
    try {
      await fn(timer);
      if (failing) clearAnnouncement();
      failing = false;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        failing = true;
        announce(`Could not refresh: ${error.message || error}`, "error");
      }
    } finally {
      busyNow = false;
    }
    schedule();
  }
  timers.add(timer);
  tick();
  return timer;
}

// -- layout and sign-in -----------------------------------------------------------------

let pageReady = null;
let readyStarted = false;

function currentPage() {
  const last = window.location.pathname.split("/").pop();
  return last === "" ? "index.html" : last;
}

function renderHeader() {
  const header = byId("site-header");
  if (!header) return;
  const here = currentPage();
  const signOut = el(
    "button",
    { type: "button", class: "secondary", id: "sign-out", hidden: !getToken() },
    "Sign out",
  );
  signOut.addEventListener("click", () => {
    signedOut("Signed out. The token was removed from this tab.", "ok");
  });
  header.replaceChildren(
    el(
      "div",
      { class: "site-header__inner" },
      el("a", { class: "site-title", href: "index.html" }, "AGATA task manager"),
      el(
        "nav",
        { class: "site-nav", "aria-label": "Main" },
        el(
          "ul",
          {},
          NAV.map(([href, label]) =>
            el("li", {}, el("a", { href, "aria-current": href === here ? "page" : null }, label)),
          ),
        ),
      ),
      el("div", { class: "site-header__session" }, signOut),
    ),
  );
}

function signInSection(message, kind) {
  const input = el("input", {
    type: "password",
    id: "api-token",
    autocomplete: "current-password",
    spellcheck: "false",
    "aria-describedby": "api-token-hint api-token-error",
    "aria-required": "true",
  });
  const error = el("p", { class: "field-error", id: "api-token-error", hidden: true });
  const button = el("button", { type: "submit" }, "Sign in");
  const form = el(
    "form",
    { id: "signin-form", method: "post", novalidate: true },
    el(
      "div",
      { class: "field" },
      el("label", { for: "api-token" }, "API token"),
      el(
        "p",
        { class: "hint", id: "api-token-hint" },
        "The operator token ([server.gateway] api_token). It stays in this browser tab and is " +
          "sent only in the Authorization header.",
      ),
      input,
      error,
    ),
    button,
  );
  const section = el(
    "section",
    { class: "signin panel", id: "signin", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title" }, "Sign in"),
    el("p", {}, "This page shows and changes tasks; sign in with the operator API token first."),
    form,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    error.hidden = true;
    input.removeAttribute("aria-invalid");
    const fail = (text) => {
      error.textContent = text;
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    };
    if (!token) {
      fail("Enter the API token.");
      return;
    }
    button.disabled = true;
    try {
      const response = await fetch("/api/tasks?limit=1", {
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
      if (response.status === 401) {
        fail("The gateway refused this token.");
        return;
      }
      if (!response.ok) {
        const body = await readBody(response);
        fail(`The gateway could not check the token: ${body.exception || response.status}`);
        return;
      }
    } catch {
      fail("The gateway did not answer; check that it is running.");
      return;
    } finally {
      button.disabled = false;
    }
    input.value = "";
    setToken(token);
    section.remove();
    if (readyStarted) {
      // Signed out while using the page: start it afresh.
      window.location.reload();
      return;
    }
    await showContent();
    // Land keyboard and screen-reader users on the page they signed in to.
    const heading = byId("content").querySelector("h1");
    if (heading && !document.activeElement?.closest?.("#content")) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  });
  if (message) {
    section.insertBefore(
      el("p", { class: "status-message", dataset: { kind: kind || "error" } }, message),
      form,
    );
  }
  return section;
}

function showSignIn(message, kind) {
  const main = byId("main");
  const content = byId("content");
  content.hidden = true;
  byId("signin")?.remove();
  clearAnnouncement();
  const section = signInSection(message, kind);
  main.insertBefore(section, content);
  const signOut = byId("sign-out");
  if (signOut) signOut.hidden = true;
  byId("api-token").focus();
  markReady("signin");
}

function signedOut(message, kind = "error") {
  clearToken();
  for (const timer of [...timers]) timer.stop();
  showSignIn(message, kind);
}

async function showContent() {
  const content = byId("content");
  content.hidden = false;
  const signOut = byId("sign-out");
  if (signOut) signOut.hidden = false;
  readyStarted = true;
  showFlash();
  try {
    await pageReady();
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      announce(error.message || String(error), "error");
    }
  } finally {
    markReady("content");
  }
}

/** Say the page is ready for use (its handlers attached, its first data shown): tests and
 * tools wait for html[data-ready]. */
function markReady(state) {
  document.documentElement.dataset.ready = state;
}

/** Start a page: header, then sign-in (when no token) or the page's own code. */
export function initPage(onReady) {
  delete document.documentElement.dataset.ready;
  pageReady = onReady;
  renderHeader();
  if (!getToken()) {
    showSignIn();
    return;
  }
  showContent();
}
