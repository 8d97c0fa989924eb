// Create a task (every AGATA field) and upload it in the same flow: a Flower App as an archive
// or a folder, or a script task's files.

import { api, byId, flash, getSchemas, initPage, taskUrl } from "../app.js";
import {
  busy,
  check,
  clearErrors,
  collect,
  decorate,
  chosenUpload,
  fileProblems,
  leftOutNote,
  showApiError,
  showErrors,
  uploadForm,
} from "../forms.js";

const FIELDS = [
  "task_id",
  "host",
  "port",
  "selection_criteria",
  "server_arguments",
  "client_arguments",
  "tags",
  "devices",
  "min_devices",
  "deadline_s",
];

initPage(async () => {
  const form = byId("create-form");
  const schemas = await getSchemas();
  const schema = schemas.rpc_exec_create_task;
  const uploadSchema = schemas.rpc_exec_upload_task_file;
  decorate(form, schema, [...FIELDS, "archive", "folder", "files"]);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const { data, errors: conversion } = collect(form, schema, FIELDS);
    const errors = check(schema, data, conversion);
    const upload = chosenUpload(form);
    errors.push(...upload.problems);
    for (const problem of fileProblems(upload.entries, uploadSchema)) {
      errors.push({ path: upload.source, message: problem });
    }
    if (errors.length) {
      showErrors(form, errors);
      return;
    }
    await busy(form, async () => {
      let task;
      try {
        task = await api("/api/tasks", { method: "POST", json: data });
      } catch (error) {
        // The only conflict a new task can meet is an id that is taken.
        showApiError(form, error, (status) => (status === 409 ? "task_id" : null));
        return;
      }
      let count = 0;
      let note = "";
      if (upload.source) {
        try {
          const stored = await api(`/api/tasks/${encodeURIComponent(task.id)}/files`, {
            method: "POST",
            form: uploadForm(upload),
          });
          count = stored.files.length;
          note = leftOutNote(upload.skipped.length + stored.skipped.length);
        } catch (error) {
          if (error.status === 401) return;
          showErrors(form, [
            {
              path: upload.source,
              message:
                `Task ${task.id} was created, but its files were not stored: ${error.message} ` +
                "Upload them on the Upload files page.",
            },
          ]);
          return;
        }
      }
      const files = count ? ` with ${count} file${count === 1 ? "" : "s"}${note}` : "";
      flash(`Task ${task.id} created${files}.`);
      window.location.assign(taskUrl(task.id));
    });
  });
});
