// Update a task: load it, edit its fields, send only what changed (PATCH /api/tasks/{id}).

import { ApiError, api, byId, flash, getSchemas, initPage, param, statusBadge, taskUrl } from "../app.js";
import {
  busy,
  check,
  clearErrors,
  collect,
  decorate,
  formatArguments,
  showApiError,
  showErrors,
} from "../forms.js";

const FIELDS = ["host", "port", "selection_criteria", "server_arguments", "client_arguments", "tags"];

initPage(async () => {
  const schema = (await getSchemas()).rpc_exec_update_task;
  const loadForm = byId("load-form");
  const form = byId("update-form");
  decorate(loadForm, schema, ["task_id"]);
  decorate(form, schema, FIELDS);
  let loaded = null;
  let original = null;

  const fill = (task) => {
    const field = (name) => form.elements.namedItem(name);
    field("host").value = task.host;
    field("port").value = task.port === null ? "" : String(task.port);
    field("selection_criteria").value = task.selection_criteria;
    field("server_arguments").value = formatArguments(task.server_arguments);
    field("client_arguments").value = formatArguments(task.client_arguments);
    field("tags").value = task.tags.join(", ");
    // What the fields hold now, read back the way a save reads them, to find changes.
    original = collect(form, schema, FIELDS, { keepEmpty: true }).data;
    loaded = task;
    const title = byId("update-title");
    title.replaceChildren(`Task ${task.id} `, statusBadge(task.status));
    byId("update-task-link").href = taskUrl(task.id);
    form.hidden = false;
  };

  const load = async (id) => {
    clearErrors(loadForm);
    const { data, errors: conversion } = collect(loadForm, schema, ["task_id"]);
    const errors = check(schema, data, conversion, ["task_id"]);
    if (errors.length) {
      showErrors(loadForm, errors);
      return;
    }
    await busy(loadForm, async () => {
      try {
        fill(await api(`/api/tasks/${encodeURIComponent(id ?? data.task_id)}`));
        form.elements.namedItem("host").focus();
      } catch (error) {
        form.hidden = true;
        showApiError(loadForm, error, () => "task_id");
      }
    });
  };

  loadForm.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    if (!loaded) return;
    const { data, errors: conversion } = collect(form, schema, FIELDS, { keepEmpty: true });
    const changes = {};
    for (const name of FIELDS) {
      if (JSON.stringify(data[name]) !== JSON.stringify(original[name])) changes[name] = data[name];
    }
    if ("port" in changes && changes.port === undefined) {
      conversion.push({ path: "port", message: "A task needs a port; enter one." });
    }
    const body = { task_id: loaded.id, ...changes };
    const errors = check(schema, body, conversion);
    if (errors.length) {
      showErrors(form, errors);
      return;
    }
    const names = Object.keys(changes);
    if (!names.length) {
      showErrors(form, [{ path: "", message: "Nothing to save: no field was changed." }]);
      return;
    }
    await busy(form, async () => {
      try {
        const task = await api(`/api/tasks/${encodeURIComponent(loaded.id)}`, {
          method: "PATCH",
          json: changes,
        });
        flash(`Task ${task.id} updated (${names.join(", ").replace(/_/g, " ")}).`);
        window.location.assign(taskUrl(task.id));
      } catch (error) {
        // A conflict here is a host or port change while the task runs.
        showApiError(form, error, (status, message) => {
          if (status !== 409) return null;
          if (/port/.test(message) && "port" in changes) return "port";
          if (/host/.test(message) && "host" in changes) return "host";
          return null;
        });
        if (error instanceof ApiError && error.status === 404) form.hidden = true;
      }
    });
  });

  const id = param("id");
  if (id) {
    loadForm.elements.namedItem("task_id").value = id;
    await load(id);
  }
});
