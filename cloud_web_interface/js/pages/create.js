// Create a task (every AGATA field) and upload its files in the same flow.

import { api, byId, flash, getSchemas, initPage, taskUrl } from "../app.js";
import {
  busy,
  check,
  clearErrors,
  collect,
  decorate,
  archiveForm,
  chosenUpload,
  fileProblems,
  filesForm,
  showApiError,
  showErrors,
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
  "deadline_s",
];

initPage(async () => {
  const form = byId("create-form");
  const schemas = await getSchemas();
  const schema = schemas.rpc_exec_create_task;
  const uploadSchema = schemas.rpc_exec_upload_task_file;
  decorate(form, schema, [...FIELDS, "archive", "files"]);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const { data, errors: conversion } = collect(form, schema, FIELDS);
    const errors = check(schema, data, conversion);
    const { archive, files, problems } = chosenUpload(form);
    errors.push(...problems);
    for (const problem of fileProblems(files, uploadSchema)) {
      errors.push({ path: "files", message: problem });
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
      let count = files.length;
      if (archive || files.length) {
        try {
          const stored = await api(`/api/tasks/${encodeURIComponent(task.id)}/files`, {
            method: "POST",
            form: archive ? archiveForm(archive) : filesForm(files),
          });
          count = stored.files.length;
        } catch (error) {
          if (error.status === 401) return;
          showErrors(form, [
            {
              path: archive ? "archive" : "files",
              message:
                `Task ${task.id} was created, but its files were not stored: ${error.message} ` +
                "Upload them on the Upload files page.",
            },
          ]);
          return;
        }
      }
      flash(`Task ${task.id} created${count ? ` with ${count} file${count === 1 ? "" : "s"}` : ""}.`);
      window.location.assign(taskUrl(task.id));
    });
  });
});
