// Forms driven by the server's JSON Schemas: hints and "required" marks come from the
// schema, text fields are converted to JSON by the type the schema asks for, the request is
// validated with schema.js, and errors (from the schema or from the server) are shown next to
// the field they concern.

import { ApiError, el } from "./app.js";
import { allowedTypes, nonNullSchema, propertySchema, validate } from "./schema.js";

// -- text to JSON -------------------------------------------------------------------------

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** "5" -> 5, "0.1" -> 0.1, "true" -> true, "\"5\"" -> "5", anything else stays text. */
export function parseScalar(text) {
  const value = text.trim();
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) {
    try {
      return JSON.parse(value);
    } catch {
      return value.slice(1, -1);
    }
  }
  if (value === "true") return true;
  if (value === "false") return false;
  if (INTEGER.test(value)) {
    const number = Number(value);
    return Number.isSafeInteger(number) ? number : value;
  }
  if (DECIMAL.test(value)) return Number(value);
  return value;
}

/** How a value is written back in a name=value line (quoted when it would change type). */
export function scalarText(value) {
  if (typeof value !== "string") return JSON.stringify(value);
  if (value === "" || value.trim() !== value || parseScalar(value) !== value) {
    return JSON.stringify(value);
  }
  return value;
}

export function formatArguments(args) {
  return Object.entries(args || {})
    .map(([name, value]) => `${name}=${scalarText(value)}`)
    .join("\n");
}

class ParseError extends Error {}

/** Arguments as name=value lines (blank lines and # comments skipped) or a JSON object. */
export function parseArguments(text) {
  const source = text.trim();
  if (source === "") return {};
  if (source.startsWith("{")) {
    let value;
    try {
      value = JSON.parse(source);
    } catch (error) {
      throw new ParseError(`Not valid JSON: ${error.message}`);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new ParseError("Write a JSON object, e.g. {\"epochs\": 5}.");
    }
    return value;
  }
  const result = {};
  source.split(/\r?\n/).forEach((line, index) => {
    const trimmed = line.trim();
    if (trimmed === "" || trimmed.startsWith("#")) return;
    const at = trimmed.indexOf("=");
    if (at <= 0) {
      throw new ParseError(`Line ${index + 1}: write name=value, e.g. epochs=5.`);
    }
    const name = trimmed.slice(0, at).trim();
    if (Object.hasOwn(result, name)) {
      throw new ParseError(`Line ${index + 1}: "${name}" is given twice.`);
    }
    result[name] = parseScalar(trimmed.slice(at + 1));
  });
  return result;
}

/** A list typed as "a, b, c" (commas or new lines). */
export function parseList(text) {
  return text
    .split(/[,\n]/)
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

function parseNumber(text) {
  const value = text.trim();
  if (value === "") return undefined;
  if (INTEGER.test(value) || DECIMAL.test(value)) return Number(value);
  return value; // left as text: the schema reports "Must be a whole number."
}

/** The JSON value of a control, following the type its schema asks for. */
export function controlValue(control, schema, root) {
  const types = allowedTypes(nonNullSchema(schema || {}, root), root).filter((t) => t !== "null");
  if (control.type === "checkbox") return control.checked;
  const text = control.value;
  if (types.includes("object")) return parseArguments(text);
  if (types.includes("array")) return parseList(text);
  if (!types.includes("string") && (types.includes("integer") || types.includes("number"))) {
    return parseNumber(text);
  }
  if (types.includes("boolean") && types.length === 1) return text === "true";
  return text.trim();
}

function isEmpty(value) {
  if (value === undefined || value === null || value === "") return true;
  if (Array.isArray(value)) return value.length === 0;
  if (typeof value === "object") return Object.keys(value).length === 0;
  return false;
}

/**
 * Read the named fields of a form as a request body.
 * Empty values are left out (the server's defaults apply) unless keepEmpty.
 * Returns {data, errors}; errors are fields whose text could not be converted.
 */
export function collect(form, schema, names, { keepEmpty = false } = {}) {
  const data = {};
  const errors = [];
  for (const name of names) {
    const control = form.elements.namedItem(name);
    if (!control) continue;
    try {
      const value = controlValue(control, propertySchema(schema, name).schema, schema);
      if (keepEmpty || !isEmpty(value)) data[name] = value;
    } catch (error) {
      if (!(error instanceof ParseError)) throw error;
      errors.push({ path: name, message: error.message });
    }
  }
  return { data, errors };
}

/**
 * Conversion errors first, then the schema's. With ``only``, errors of other fields are
 * dropped (a form that fills part of a request, e.g. the task id of an upload).
 */
export function check(schema, data, conversionErrors = [], only = null) {
  const broken = new Set(conversionErrors.map((e) => e.path));
  const schemaErrors = validate(schema, data).filter(
    (e) => !broken.has(topField(e.path)) && (!only || only.includes(topField(e.path))),
  );
  return [...conversionErrors, ...schemaErrors];
}

// -- field decoration ---------------------------------------------------------------------

function topField(path) {
  return String(path || "").split(".")[0];
}

function fieldParts(form, name) {
  const control = form.elements.namedItem(name);
  if (!control || !control.id) return null;
  return {
    control,
    error: document.getElementById(`${control.id}-error`),
    hint: document.getElementById(`${control.id}-hint`),
    label: form.querySelector(`label[for="${control.id}"]`),
  };
}

function describedBy(control, ids) {
  const current = (control.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
  for (const id of ids) if (id && !current.includes(id)) current.push(id);
  if (current.length) control.setAttribute("aria-describedby", current.join(" "));
}

/**
 * Give every named field its schema description as a hint, a "(required)" mark when the
 * model requires it, and an error slot right after the control.
 */
export function decorate(form, schema, names, { required = [] } = {}) {
  for (const name of names) {
    const parts = fieldParts(form, name);
    if (!parts) continue;
    const { control } = parts;
    const property = propertySchema(schema, name);
    const description = property.schema
      ? property.schema.description || nonNullSchema(property.schema, schema).description
      : null;
    if (parts.hint && !parts.hint.textContent.trim() && description) {
      parts.hint.textContent = description;
    }
    let error = parts.error;
    if (!error) {
      error = el("p", { class: "field-error", id: `${control.id}-error`, hidden: true });
      control.insertAdjacentElement("afterend", error);
    }
    describedBy(control, [parts.hint ? parts.hint.id : null, error.id]);
    const isRequired = property.required || required.includes(name);
    if (isRequired) {
      control.setAttribute("aria-required", "true");
      if (parts.label && !parts.label.querySelector(".required-mark")) {
        parts.label.append(" ", el("span", { class: "required-mark" }, "(required)"));
      }
    }
  }
}

function formErrorSlot(form) {
  let slot = form.querySelector(".form-error");
  if (!slot) {
    slot = el("p", { class: "form-error", "aria-live": "polite" });
    form.prepend(slot);
  }
  return slot;
}

export function clearErrors(form) {
  for (const error of form.querySelectorAll(".field-error")) {
    error.textContent = "";
    error.hidden = true;
  }
  for (const control of form.querySelectorAll("[aria-invalid]")) {
    control.removeAttribute("aria-invalid");
  }
  const slot = form.querySelector(".form-error");
  if (slot) slot.textContent = "";
}

function fieldMessage(path, message) {
  // "server_arguments.epochs" -> "epochs: ..." (unless the message names it already)
  const inner = String(path || "").split(".").slice(1).join(".");
  if (inner && !message.includes(inner.split(".")[0])) return `${inner}: ${message}`;
  return message;
}

/**
 * Show errors next to their fields ({path or field, message}); errors naming no field of the
 * form go to the form's own error line. The first invalid control gets the focus.
 */
export function showErrors(form, errors, { focus = true } = {}) {
  clearErrors(form);
  let first = null;
  const general = [];
  for (const problem of errors) {
    const path = problem.path ?? problem.field ?? "";
    const parts = fieldParts(form, topField(path));
    if (!parts || !parts.error) {
      general.push(problem.message);
      continue;
    }
    const text = fieldMessage(path, problem.message);
    parts.error.textContent = parts.error.textContent
      ? `${parts.error.textContent} ${text}`
      : text;
    parts.error.hidden = false;
    parts.control.setAttribute("aria-invalid", "true");
    const fold = parts.control.closest("details");
    if (fold) fold.open = true; // an optional field folded away is shown with its error
    if (!first) first = parts.control;
  }
  if (general.length) {
    formErrorSlot(form).textContent = general.join(" ");
  }
  if (focus && first) first.focus();
  else if (focus && general.length) formErrorSlot(form).scrollIntoView({ block: "nearest" });
  return errors.length;
}

/**
 * Show a failed API call on the form: the server's field errors next to their fields; other
 * errors next to the field fieldFor(status, message) names, or on the form's error line.
 */
export function showApiError(form, error, fieldFor = () => null) {
  if (!(error instanceof ApiError)) {
    showErrors(form, [{ path: "", message: error.message || String(error) }]);
    return;
  }
  if (error.status === 401) return; // the sign-in form takes over
  const fields = error.fieldErrors.map((e) => ({
    path: e.field === "body" ? "" : e.field,
    message: e.message,
  }));
  if (fields.length) {
    showErrors(form, fields);
    return;
  }
  const field = fieldFor(error.status, error.message);
  showErrors(form, [{ path: field || "", message: error.message }]);
}

/** Disable a form's submit buttons while a request runs. */
export async function busy(form, work) {
  const buttons = [...form.querySelectorAll("button")];
  buttons.forEach((b) => {
    b.disabled = true;
  });
  form.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    buttons.forEach((b) => {
      b.disabled = false;
    });
    form.removeAttribute("aria-busy");
  }
}

// -- task files --------------------------------------------------------------------------------

// A task's files are paths inside its folder: plain names joined by "/" (TaskPath in
// agata_contracts/common.py); the upload schema carries the pattern and the length limits,
// this mirrors the rule for each name in a path.
const FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;

/** Problems with the chosen files ({file, path}), checked with the upload schema's "filename". */
export function fileProblems(entries, uploadSchema) {
  const nameSchema = uploadSchema ? propertySchema(uploadSchema, "filename").schema : undefined;
  const problems = [];
  const seen = new Set();
  for (const { path } of entries) {
    const errors = nameSchema ? validate(nameSchema, path, uploadSchema) : [];
    for (const e of errors) problems.push(`${path}: ${e.message}`);
    if (!errors.length && (path.split("/").some((name) => !FILE_NAME.test(name)) ||
        path.includes(".."))) {
      problems.push(
        `${path}: use letters, digits, '.', '_' and '-' only (not first, no '..').`,
      );
    }
    if (seen.has(path)) problems.push(`${path} is chosen twice.`);
    seen.add(path);
  }
  return problems;
}

/**
 * Left out of a folder as the server leaves them out of an archive (archives.py): hidden
 * files and folders, and Python caches.
 */
function leftOut(path) {
  const names = path.split("/");
  return names.some((name) => name.startsWith(".")) || names.includes("__pycache__") ||
    /\.py[co]$/.test(path);
}

/**
 * The files of a chosen folder with their paths inside it (the chosen folder's own name
 * stripped), and the paths left out.
 */
export function folderEntries(files) {
  const entries = [];
  const skipped = [];
  for (const file of files) {
    const relative = file.webkitRelativePath || file.name;
    const path = relative.includes("/") ? relative.slice(relative.indexOf("/") + 1) : relative;
    if (leftOut(path)) skipped.push(path);
    else entries.push({ file, path });
  }
  return { entries, skipped };
}

const SOURCES = [
  ["archive", "an app archive"],
  ["folder", "a folder"],
  ["files", "files"],
];

/**
 * What the form uploads: one app archive, one folder or some files. Returns
 * {source, archive, entries, skipped, problems}: source names the chosen field (null when
 * nothing is chosen), entries are {file, path} of a folder or files, skipped the folder's
 * paths left out.
 */
export function chosenUpload(form, { required = false } = {}) {
  const chosen = SOURCES.filter(([name]) => {
    const control = form.elements.namedItem(name);
    return control && control.files.length;
  });
  const choice = { source: null, archive: null, entries: [], skipped: [], problems: [] };
  if (chosen.length > 1) {
    const what = chosen.map(([, text]) => text).join(" and ");
    choice.problems.push({
      path: chosen[0][0],
      message: `Choose only one of an app archive, a folder or files (${what} are chosen).`,
    });
    return choice;
  }
  if (!chosen.length) {
    if (required) {
      choice.problems.push({
        path: "files",
        message: "Choose an app archive, a folder or at least one file.",
      });
    }
    return choice;
  }
  const source = chosen[0][0];
  const files = [...form.elements.namedItem(source).files];
  choice.source = source;
  if (source === "archive") {
    choice.archive = files[0];
    if (!/\.(zip|fab)$/i.test(choice.archive.name)) {
      choice.problems.push({
        path: source,
        message: `${choice.archive.name}: choose a .zip or a .fab file.`,
      });
    }
  } else if (source === "folder") {
    Object.assign(choice, folderEntries(files));
    if (!choice.entries.length) {
      choice.problems.push({
        path: source,
        message: "The folder holds no files to upload (hidden files and Python caches are " +
          "left out).",
      });
    }
  } else {
    choice.entries = files.map((file) => ({ file, path: file.name }));
  }
  return choice;
}

/**
 * The multipart body of a chosen upload: the "archive" part, or a "files" part per file,
 * each named by its path in the task.
 */
export function uploadForm(choice) {
  const form = new FormData();
  if (choice.archive) form.append("archive", choice.archive, choice.archive.name);
  for (const { file, path } of choice.entries) form.append("files", file, path);
  return form;
}

/** Forget what the upload fields hold. */
export function clearUpload(form) {
  for (const [name] of SOURCES) {
    const control = form.elements.namedItem(name);
    if (control) control.value = "";
  }
}

/** " (3 left out: hidden files and Python caches)", or "" when nothing was left out. */
export function leftOutNote(count) {
  return count ? ` (${count} left out: hidden files and Python caches)` : "";
}
