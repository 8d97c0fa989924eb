// Enroll a device: a one-time join token, shown once.

import { announce, api, byId, el, getSchemas, initPage, param, timeElement } from "../app.js";
import { busy, check, clearErrors, collect, decorate, showApiError, showErrors } from "../forms.js";

const FIELDS = ["client_id", "ttl_s"];

initPage(async () => {
  const form = byId("enroll-form");
  const schema = (await getSchemas()).rpc_exec_enroll_client;
  decorate(form, schema, FIELDS);
  const id = param("id");
  if (id) form.elements.namedItem("client_id").value = id;
  const result = byId("enroll-result");

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
        const enrollment = await api("/api/clients/enroll", { method: "POST", json: data });
        const who = enrollment.client_id ? `device ${enrollment.client_id}` : "one device";
        announce(`Join token created for ${who}.`, "ok");
        result.replaceChildren(
          el("div", { class: "panel", id: "join-token-panel" },
            el("p", {}, `Join token for ${who}, usable once until `,
              timeElement(enrollment.expires_at, { relative: false }), ". It is shown only now:"),
            el("pre", { id: "join-token" }, enrollment.join_token)),
        );
      } catch (error) {
        showApiError(form, error, () => "client_id");
      }
    });
  });
});
