// Upload to a task (AGATA's upload form): a Flower App archive replaces all of its files; a
// folder's files or single files replace files of the same path.

import { announce, api, byId, el, formatBytes, getSchemas, initPage, param, taskUrl } from "../app.js";
import {
  busy,
  check,
  clearErrors,
  collect,
  decorate,
  chosenUpload,
  clearUpload,
  fileProblems,
  leftOutNote,
  showApiError,
  showErrors,
  uploadForm,
} from "../forms.js";

initPage(async () => {
  const form = byId("upload-form");
  const schema = (await getSchemas()).rpc_exec_upload_task_file;
  decorate(form, schema, ["task_id", "archive", "folder", "files"]);
  const id = param("id");
  if (id) form.elements.namedItem("task_id").value = id;
  const result = byId("upload-result");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    result.replaceChildren();
    const { data, errors: conversion } = collect(form, schema, ["task_id"]);
    // The schema is of one file's RPC: only its task_id (and the file names) apply here.
    const errors = check(schema, data, conversion, ["task_id"]);
    const upload = chosenUpload(form, { required: true });
    errors.push(...upload.problems);
    for (const problem of fileProblems(upload.entries, schema)) {
      errors.push({ path: upload.source, message: problem });
    }
    if (errors.length) {
      showErrors(form, errors);
      return;
    }
    await busy(form, async () => {
      try {
        const stored = await api(`/api/tasks/${encodeURIComponent(data.task_id)}/files`, {
          method: "POST",
          form: uploadForm(upload),
        });
        clearUpload(form);
        const note = leftOutNote(upload.skipped.length + stored.skipped.length);
        announce(`Uploaded ${stored.files.length} file(s) to task ${stored.task_id}${note}.`, "ok");
        result.replaceChildren(
          el("section", { class: "panel", "aria-labelledby": "stored-title" },
            el("h2", { id: "stored-title" }, "Stored files"),
            el("ul", {}, stored.files.map((f) =>
              el("li", {}, el("code", {}, f.name), ` — ${formatBytes(f.size)}`))),
            el("p", {}, el("a", { href: taskUrl(stored.task_id) }, `Open task ${stored.task_id}`))),
        );
      } catch (error) {
        showApiError(form, error, (status) =>
          status === 404 ? "task_id" : upload.source);
      }
    });
  });
});
