// Stop a task's Flower server.

import { announce, api, byId, el, getSchemas, initPage, param, statusBadge, taskUrl } from "../app.js";
import { busy, check, clearErrors, collect, decorate, showApiError, showErrors } from "../forms.js";

const FIELDS = ["task_id"];

initPage(async () => {
  const form = byId("stop-form");
  const schema = (await getSchemas()).rpc_exec_stop_server_task;
  decorate(form, schema, FIELDS);
  const id = param("id");
  if (id) form.elements.namedItem("task_id").value = id;
  const result = byId("stop-result");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    result.replaceChildren();
    const { data, errors: conversion } = collect(form, schema, FIELDS);
    const errors = check(schema, data, conversion);
    if (errors.length) {
      showErrors(form, errors);
      return;
    }
    await busy(form, async () => {
      try {
        const task = await api(`/api/tasks/${encodeURIComponent(data.task_id)}/stop`, {
          method: "POST",
        });
        announce(`Task ${task.id} is ${task.status}.`, "ok");
        result.replaceChildren(
          el("p", { class: "panel" }, "Task ", el("a", { href: taskUrl(task.id) }, task.id),
            " is now ", statusBadge(task.status),
            task.status_reason ? ` (${task.status_reason})` : "", "."),
        );
      } catch (error) {
        // 404 (no such task) and 409 (not running) concern the task named.
        showApiError(form, error, () => "task_id");
      }
    });
  });
});
