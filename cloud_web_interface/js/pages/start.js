// Start a task, optionally overriding server arguments for this run (AGATA's "Inicie a tarefa").

import { api, byId, flash, getSchemas, initPage, param, taskUrl } from "../app.js";
import { busy, check, clearErrors, collect, decorate, showApiError, showErrors } from "../forms.js";

const FIELDS = ["task_id", "server_arguments"];

initPage(async () => {
  const form = byId("start-form");
  const schema = (await getSchemas()).rpc_exec_start_server_task;
  decorate(form, schema, FIELDS);
  const id = param("id");
  if (id) form.elements.namedItem("task_id").value = id;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const { data, errors: conversion } = collect(form, schema, FIELDS);
    const errors = check(schema, data, conversion);
    if (errors.length) {
      showErrors(form, errors);
      return;
    }
    const body = data.server_arguments ? { server_arguments: data.server_arguments } : undefined;
    await busy(form, async () => {
      try {
        const task = await api(`/api/tasks/${encodeURIComponent(data.task_id)}/start`, {
          method: "POST",
          json: body,
        });
        flash(`Task ${task.id} started (run ${task.runs}).`);
        window.location.assign(taskUrl(task.id));
      } catch (error) {
        // 404 (no such task) and 409 (running already, no server.py) concern the task named.
        showApiError(form, error, () => "task_id");
      }
    });
  });
});
